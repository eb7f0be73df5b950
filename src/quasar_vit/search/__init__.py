"""Hardware-oriented evolutionary search (paper section 3) and its baselines.

Torch-free core (``encoding``, ``pareto``, ``targets``, ``evolution``) with injected accuracy and
latency functions; ``run_search`` glues in a trained supernet and the FPGA model.  See
``docs/search.md``.
"""

from quasar_vit.search.encoding import MODES, Encoding, make_encoding, parse_mode
from quasar_vit.search.evolution import (
    Candidate,
    Evaluator,
    Evolution,
    EvolutionResult,
    HardwareOracle,
    SearchStateError,
    run_evolution,
)
from quasar_vit.search.pareto import (
    best_meeting,
    dominates,
    front_dominated,
    hypervolume,
    normalized_hypervolume,
    pareto_front,
)
from quasar_vit.search.runner import ModeResult, SearchRequest, SearchResult, run_search
from quasar_vit.search.targets import Target, default_targets, parse_targets

__all__ = [
    "MODES",
    "Candidate",
    "Encoding",
    "Evaluator",
    "Evolution",
    "EvolutionResult",
    "HardwareOracle",
    "ModeResult",
    "SearchRequest",
    "SearchResult",
    "SearchStateError",
    "Target",
    "best_meeting",
    "default_targets",
    "dominates",
    "front_dominated",
    "hypervolume",
    "make_encoding",
    "normalized_hypervolume",
    "parse_mode",
    "parse_targets",
    "pareto_front",
    "run_evolution",
    "run_search",
]
