"""User-facing errors.

Everything a user can get wrong (a path, a config key, a subnet outside the space, a corrupt
checkpoint, an infeasible latency target) raises a subclass of :class:`QuasarError`.  The CLI turns
these into one line on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""


class QuasarError(Exception):
    """Base class of errors caused by user input, reported without a traceback."""


class ConfigError(QuasarError):
    """A malformed or invalid configuration file or value."""


class SubnetError(QuasarError):
    """A subnet description that is malformed or outside the supernet's search space."""


class DataError(QuasarError):
    """A missing or malformed data set."""


class CheckpointError(QuasarError):
    """A missing, corrupt or incompatible checkpoint."""


class HardwareError(QuasarError):
    """An unknown platform, or a request the hardware cannot meet (no design fits, target infeasible)."""


class ExportError(QuasarError):
    """An export or verification that cannot be carried out."""


class TrainingError(QuasarError):
    """Training cannot go on (e.g. a non-finite loss)."""


class BusyError(QuasarError):
    """Another quasar-vit process is writing the same output directory."""


class RtlError(QuasarError):
    """An RTL build, simulation or synthesis that cannot be carried out (a missing tool, a failed build)."""
