"""FPGA latency and resource model with model-adaptive accelerator design (torch-free).

Pure Python + NumPy so that a board planner can use it alone::

    from quasar_vit.hardware import load_platform, explore
    report = explore(subnet, load_platform("zcu102"))
    print(report.fps, report.design.to_dict())

See ``docs/hardware-model.md`` for the model, its parameters and its calibration.
"""

from quasar_vit.hardware.design import AcceleratorDesign
from quasar_vit.hardware.dse import design_from_dict, evaluate, explore
from quasar_vit.hardware.params import ModelParams
from quasar_vit.hardware.platforms import Platform, list_platforms, load_platform
from quasar_vit.hardware.report import HardwareReport
from quasar_vit.hardware.resources import Resources, estimate_resources

__all__ = [
    "load_platform",
    "Platform",
    "AcceleratorDesign",
    "HardwareReport",
    "evaluate",
    "explore",
    "design_from_dict",
    "list_platforms",
    "ModelParams",
    "Resources",
    "estimate_resources",
]
