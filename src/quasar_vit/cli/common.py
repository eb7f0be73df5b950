"""Argument helpers shared by subcommands."""
from __future__ import annotations

import argparse

from quasar_vit.errors import SubnetError
from quasar_vit.space import SearchSpace, SubnetConfig


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto (default: the local GPU when there is one, else CPU), cpu, cuda, cuda:1, ...")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def resolve_subnet(value: str, space: SearchSpace) -> SubnetConfig:
    """``largest``, ``smallest`` or a subnet JSON file, validated against ``space``."""
    if value == "largest":
        return space.largest()
    if value == "smallest":
        return space.smallest()
    sub = SubnetConfig.load(value)
    try:
        space.validate(sub)
    except SubnetError as exc:
        raise SubnetError(f"{value}: not a subnet of this supernet: {exc}") from None
    return sub
