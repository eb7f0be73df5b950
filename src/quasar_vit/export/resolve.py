"""A subnet named on the command line or passed to the API, resolved in one place.

A subnet is ``largest``, ``smallest``, a :class:`SubnetConfig`, or a JSON file: a bare subnet, or
a search result (``subnet_*.json``) that also records the board it was searched for and the
accelerator design the search chose.  ``export`` reuses that design instead of exploring again,
so the search result stays the one source of truth for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from quasar_vit.errors import SubnetError
from quasar_vit.space import SearchSpace, SubnetConfig


@dataclass(frozen=True)
class ResolvedSubnet:
    """A validated subnet and, for a search result, the board and design the search chose."""

    subnet: SubnetConfig
    source: str  # "largest", "smallest", "subnet" (an object) or the file path, for messages
    platform: str | None = None  # the board the search ran for
    design: Mapping[str, Any] | None = None  # the searched AcceleratorDesign as a dict

    @property
    def searched(self) -> bool:
        """True if the subnet came with a searched design."""
        return self.design is not None


def _read(path: str | Path) -> ResolvedSubnet:
    from quasar_vit.utils.io import read_json

    data = read_json(path, SubnetError, "subnet file")
    if not (isinstance(data, dict) and isinstance(data.get("subnet"), dict)):  # a bare subnet
        return ResolvedSubnet(SubnetConfig.from_dict(data), str(path))
    design, platform = data.get("design"), data.get("platform")
    return ResolvedSubnet(
        SubnetConfig.from_dict(data["subnet"]),
        str(path),
        str(platform) if platform is not None else None,
        design if isinstance(design, dict) else None,
    )


def resolve_subnet(value: SubnetConfig | str | Path, space: SearchSpace) -> ResolvedSubnet:
    """Resolve ``value`` and check it is a subnet of ``space``.

    Args:
        value: ``"largest"``, ``"smallest"``, a :class:`SubnetConfig`, or the path of a subnet JSON
            file (a search result's ``{"subnet": ..., "platform": ..., "design": ...}`` works too).
        space: the search space of the checkpoint's supernet.

    Returns:
        The :class:`ResolvedSubnet` (``platform``/``design`` are set only for a search result).

    Raises:
        SubnetError: the file is missing or malformed, or the subnet is not in ``space``.
    """
    if isinstance(value, SubnetConfig):
        ref = ResolvedSubnet(value, "subnet")
    elif str(value) in ("largest", "smallest"):
        return ResolvedSubnet(space.largest() if str(value) == "largest" else space.smallest(), str(value))
    else:
        ref = _read(value)
    try:
        space.validate(ref.subnet)
    except SubnetError as exc:
        raise SubnetError(f"{ref.source}: not a subnet of this checkpoint's supernet: {exc}") from None
    return ref


__all__ = ["ResolvedSubnet", "resolve_subnet"]
