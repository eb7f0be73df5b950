"""FPGA boards as data: presets shipped as YAML, user boards from a YAML file.

A board is a handful of numbers (fabric resources, clock, DDR bandwidth, utilisation caps, the
host that runs the nonlinear ops) plus optional overrides of the cost parameters; keeping them in
YAML means a user targets a new board by writing a file, not by editing code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from quasar_vit.errors import HardwareError
from quasar_vit.hardware.params import ModelParams

_PRESET_DIR = Path(__file__).with_name("platforms")
RESOURCES = ("lut", "ff", "dsp", "bram", "uram")
_DEFAULT_CAP = {"lut": 0.70, "ff": 0.70, "dsp": 0.80, "bram": 0.80, "uram": 0.80}


@dataclass(frozen=True)
class Platform:
    """One FPGA board.  Resource counts are whole-device; ``util_cap`` limits what a design may use."""

    name: str
    lut: int
    ff: int
    dsp: int
    bram: int  # BRAM36 blocks
    uram: int
    clock_mhz: float
    ddr_gbps: float  # theoretical off-chip bandwidth
    ddr_efficiency: float  # usable share of it from the fabric
    util_cap: tuple[tuple[str, float], ...] = tuple(_DEFAULT_CAP.items())
    description: str = ""
    part: str = ""
    host_kind: str = "arm-cortex-a53"
    host_cores: int = 4
    host_clock_mhz: float = 1200.0
    params: ModelParams = field(default_factory=ModelParams)
    source: str = ""  # file it was loaded from

    def cap(self, resource: str) -> float:
        return dict(self.util_cap)[resource]

    def total(self, resource: str) -> int:
        return int(getattr(self, resource))

    def limit(self, resource: str) -> float:
        """Largest count of ``resource`` a design may use (device count x cap)."""
        return self.total(resource) * self.cap(resource)

    @property
    def bytes_per_cycle(self) -> float:
        """Usable DDR bytes per fabric clock cycle at the default clock."""
        return self.ddr_gbps * self.ddr_efficiency * 1e3 / self.clock_mhz

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "part": self.part,
            "lut": self.lut,
            "ff": self.ff,
            "dsp": self.dsp,
            "bram": self.bram,
            "uram": self.uram,
            "clock_mhz": self.clock_mhz,
            "ddr_gbps": self.ddr_gbps,
            "ddr_efficiency": self.ddr_efficiency,
            "util_cap": dict(self.util_cap),
            "host": {"kind": self.host_kind, "cores": self.host_cores, "clock_mhz": self.host_clock_mhz},
            "params": self.params.to_dict(),
        }


def list_platforms() -> list[str]:
    """Names of the preset boards shipped with quasar-vit."""
    return sorted(p.stem for p in _PRESET_DIR.glob("*.yaml"))


def _num(d: Mapping[str, Any], key: str, where: str, kind: type = float, positive: bool = True) -> Any:
    if key not in d:
        raise HardwareError(f"{where}: missing required key '{key}'")
    v = d[key]
    try:
        if isinstance(v, bool):
            raise TypeError
        out = kind(v)
    except (TypeError, ValueError):
        raise HardwareError(f"{where}: '{key}' must be a number, got {v!r}") from None
    if out < 0 or (positive and out == 0):
        raise HardwareError(f"{where}: '{key}' must be {'> 0' if positive else '>= 0'}, got {v!r}")
    return out


PLATFORM_KEYS = (
    "name",
    "description",
    "part",
    "lut",
    "ff",
    "dsp",
    "bram",
    "uram",
    "clock_mhz",
    "ddr_gbps",
    "ddr_efficiency",
    "util_cap",
    "host",
    "params",
)


def _util_cap(raw_cap: Any, where: str) -> dict[str, float]:
    """The utilisation cap per resource: the defaults, one number for all, or a mapping per resource."""
    cap = dict(_DEFAULT_CAP)
    if isinstance(raw_cap, (int, float)) and not isinstance(raw_cap, bool):
        cap = {r: float(raw_cap) for r in RESOURCES}
    elif isinstance(raw_cap, Mapping):
        bad = sorted(set(raw_cap) - set(RESOURCES))
        if bad:
            raise HardwareError(
                f"{where}: util_cap has unknown resource(s) {', '.join(bad)}; use {', '.join(RESOURCES)}"
            )
        for r, v in raw_cap.items():
            cap[r] = _num(raw_cap, r, f"{where}: util_cap")
    elif raw_cap is not None:
        raise HardwareError(f"{where}: 'util_cap' must be a number or a mapping per resource")
    for r, v in cap.items():
        if not 0 < v <= 1:
            raise HardwareError(f"{where}: util_cap for {r} must be in (0, 1], got {v}")
    return cap


def platform_from_dict(d: Mapping[str, Any], where: str = "platform") -> Platform:
    """Build a :class:`Platform` from a YAML mapping, naming the first problem found."""
    if not isinstance(d, Mapping):
        raise HardwareError(f"{where}: a platform file must be a YAML mapping")
    unknown = sorted(set(d) - set(PLATFORM_KEYS))
    if unknown:
        raise HardwareError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(PLATFORM_KEYS))}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise HardwareError(f"{where}: missing required key 'name' (a string)")
    eff = _num(d, "ddr_efficiency", where)
    if eff > 1:
        raise HardwareError(f"{where}: 'ddr_efficiency' must be in (0, 1], got {eff}")
    cap = _util_cap(d.get("util_cap", None), where)
    host = d.get("host") or {}
    if not isinstance(host, Mapping):
        raise HardwareError(f"{where}: 'host' must be a mapping (kind, cores, clock_mhz)")
    return Platform(
        name=name,
        lut=_num(d, "lut", where, int),
        ff=_num(d, "ff", where, int),
        dsp=_num(d, "dsp", where, int, positive=False),
        bram=_num(d, "bram", where, int),
        uram=_num(d, "uram", where, int, positive=False) if "uram" in d else 0,
        clock_mhz=_num(d, "clock_mhz", where),
        ddr_gbps=_num(d, "ddr_gbps", where),
        ddr_efficiency=eff,
        util_cap=tuple((r, float(cap[r])) for r in RESOURCES),
        description=str(d.get("description", "")),
        part=str(d.get("part", "")),
        host_kind=str(host.get("kind", "arm-cortex-a53")),
        host_cores=int(host.get("cores", 4)),
        host_clock_mhz=float(host.get("clock_mhz", 1200.0)),
        params=ModelParams.from_overrides(d.get("params"), where),
    )


_CACHE: dict[str, Platform] = {}


def load_platform(name_or_path: "str | Path | Platform") -> Platform:
    """A preset by name (``zcu102``...) or a user board from a YAML file path."""
    if isinstance(name_or_path, Platform):
        return name_or_path
    key = str(name_or_path)
    if key in _CACHE:
        return _CACHE[key]
    presets = list_platforms()
    lowered = key.lower()
    if lowered in presets:
        path = _PRESET_DIR / f"{lowered}.yaml"
    else:
        path = Path(key).expanduser()
        if not (path.suffix.lower() in (".yaml", ".yml") or path.exists()):
            raise HardwareError(
                f"unknown platform '{key}'; choose a preset ({', '.join(presets)}) "
                f"or give the path of a platform YAML file"
            )
        if not path.is_file():
            raise HardwareError(f"platform file not found: {path} (presets: {', '.join(presets)})")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HardwareError(f"{path} is not valid YAML: {exc}") from None
    plat = platform_from_dict(data, where=str(path))
    plat = Platform(**{**plat.__dict__, "source": str(path)})
    if lowered in presets:
        _CACHE[key] = plat
    return plat


__all__ = ["Platform", "load_platform", "list_platforms", "platform_from_dict", "RESOURCES"]
