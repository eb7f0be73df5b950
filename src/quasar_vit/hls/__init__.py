"""HLS C++ generation for an exported subnet: the model-adaptive accelerator (paper contribution 3).

    from quasar_vit.hls import generate_hls, run_csim
    hls_dir = generate_hls("exports/s")            # -> exports/s/hls/
    print(run_csim("exports/s", limit=100))         # g++ C simulation vs the NumPy integer reference

``generate_hls`` renders Jinja2 templates (``hls/templates``) from a plain data context built from
``accelerator.json``, ``weights.npz``/``manifest.json`` and ``subnet.json``; the weights go to a
binary blob (``qvit_weights.bin``) described by a generated header.  See ``docs/hls.md``.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "generate_hls": "quasar_vit.hls.generator",
    "build_context": "quasar_vit.hls.generator",
    "run_csim": "quasar_vit.hls.csim",
    "compile_csim": "quasar_vit.hls.csim",
    "csim_verdict": "quasar_vit.hls.csim",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'quasar_vit.hls' has no attribute {name!r}")


__all__ = list(_LAZY)
