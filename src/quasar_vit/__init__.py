"""quasar-vit: hardware-oriented quantization-aware architecture search for vision transformers.

Steps (each a CLI subcommand and a Python function taking files):
train a supernet -> search under latency targets -> export the chosen subnet -> deploy.
"""

from quasar_vit.space import SearchSpace, SubnetConfig

__version__ = "0.1.0"
__all__ = ["SearchSpace", "SubnetConfig", "__version__"]
