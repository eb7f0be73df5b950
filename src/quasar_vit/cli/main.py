"""``quasar-vit`` entry point.

Each subcommand lives in its own module (``quasar_vit.cli.<name>``) exposing ``add_parser`` and
``run``; modules are imported lazily so that ``quasar-vit hw`` never imports torch.
User mistakes (:class:`~quasar_vit.errors.QuasarError`) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

from quasar_vit.errors import QuasarError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("quasar_vit.cli.train", "train a quantization-aware supernet"),
    "eval": ("quasar_vit.cli.evaluate", "top-1 of a subnet of a trained supernet on the test split"),
    "hw": ("quasar_vit.cli.hw", "FPGA latency/resource model and accelerator design for a subnet"),
    "search": ("quasar_vit.cli.search", "hardware-oriented evolutionary search under latency targets"),
    "export": ("quasar_vit.cli.export", "export a subnet: integer weights, ONNX, accelerator config, report"),
    "verify": (
        "quasar_vit.cli.verify",
        "check an export: integer engine vs the checkpoint and model.pt2 (and C simulation)",
    ),
    "hls": ("quasar_vit.cli.hls", "generate HLS C++ for an exported subnet"),
    "rtl": ("quasar_vit.cli.rtl", "write an export's RTL accelerator: HDL, program, DDR image, Vivado script"),
    "demo": ("quasar_vit.cli.demo", "the whole method end to end on Fashion-MNIST"),
}


def _available() -> dict[str, tuple[str, str]]:
    out = {}
    for name, (mod, help_) in COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = (mod, help_)
    return out


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quasar-vit", description=__doc__.splitlines()[0] if __doc__ else None)
    from quasar_vit import __version__

    parser.add_argument("--version", action="version", version=f"quasar-vit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = None
    if argv:
        wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (mod, help_) in _available().items():
        p = sub.add_parser(name, help=help_, description=help_)
        # only import the module whose parser is needed (keeps `hw` free of torch)
        if wanted is None or wanted == name:
            importlib.import_module(mod).add_parser(p)
        p.set_defaults(_module=mod)
    return parser


def user_message(exc: QuasarError) -> str:
    """The error's own one line, also when a DataLoader worker raised it: torch re-raises those with
    the worker's traceback folded into the message ("Caught DataError in DataLoader worker process 0
    ... Original Traceback ..."), whose last line is the original message."""
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return text


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except QuasarError as exc:
        print(f"quasar-vit {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `quasar-vit hw ... | head`
        sys.stderr.close()
        return 0
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError, FileNotFoundError) as exc:
        # a path the user gave cannot be used as asked (a file where a folder is needed, ...)
        print(f"quasar-vit {args.command}: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as exc:
        print(f"quasar-vit {args.command}: error: a file given is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"quasar-vit {args.command}: interrupted (finished work is saved; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
