#!/usr/bin/env bash
# Behaviour fingerprint: tiny train -> search -> export through the CLI; prints hashes of the numbers.
# usage: PYTHON=.venv/bin/python bash scripts/fingerprint.sh SRC_DIR WORK_DIR   (runs SRC_DIR/src, e.g. a clone
# of an older commit, so a refactor can be compared with it: the hash lines must match)
set -euo pipefail
SRC=$1; W=$2
if [ -e "$W" ] && [ ! -f "$W/train.log" ]; then echo "error: $W exists and is not an earlier fingerprint folder" >&2; exit 2; fi
rm -rf "$W"; mkdir -p "$W"
PYBIN=${PYTHON:-python}
PY="env -u VIRTUAL_ENV PYTHONPATH=$SRC/src $PYBIN -m quasar_vit"
SPACE=(--set "model.embed_dims=[16, 32]" --set "model.depths=[1, 2]" --set "model.num_heads=[1, 2]" --set "model.mlp_ratios=[1.0, 2.0]" --set model.head_dim=8 --set model.patch_size=7)
$PY train --config fmnist-tiny --out "$W/train" "${SPACE[@]}" --set train.steps=16 --set train.batch_size=32 --set train.warmup_steps=2 --set train.log_every=4 --set train.checkpoint_every=8 --set data.train_limit=512 --set data.test_limit=256 --set data.val_size=256 --set train.sandwich_random=1 --no-progress > "$W/train.log" 2>&1
$PY search --checkpoint "$W/train" --platform zcu102 --fps 3000,6000 --out "$W/search" --baselines all --set search.population=6 --set search.generations=3 --set search.mutations=3 --set search.crossovers=3 --set search.parents=3 --no-progress > "$W/search.log" 2>&1
SUB=$(ls "$W"/search/subnet_*.json | head -1)
$PY export --checkpoint "$W/train" --subnet "$SUB" --platform zcu102 --out "$W/export" --hls > "$W/export.log" 2>&1
$PYBIN - "$W" <<'PY'
import hashlib, json, sys, pathlib, torch, numpy as np
W = pathlib.Path(sys.argv[1])
def h(b): return hashlib.sha256(b).hexdigest()[:16]
sd = torch.load(W/"train/supernet.pt", map_location="cpu", weights_only=True)
model = sd.get("model", sd)
print("supernet", h(b"".join(k.encode()+v.cpu().numpy().tobytes() for k, v in sorted(model.items()) if hasattr(v, "numpy"))))
p = json.loads((W/"search/pareto.json").read_text())
def strip(o):
    if isinstance(o, dict) and isinstance(o.get("geometry"), dict):  # nested geometry hashes as the flat form
        o = {**{k: v for k, v in o.items() if k != "geometry"}, **o["geometry"]}
    if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if not any(s in k for s in ("time", "second", "wall", "path", "out", "date", "created"))}
    if isinstance(o, list): return [strip(v) for v in o]
    return o
def jh(o): return h(json.dumps(strip(o), sort_keys=True).replace(str(W), "W").encode())
print("pareto", jh(p))
for f in sorted((W/"export").rglob("*")):
    if f.suffix in (".npz", ".json", ".h", ".cpp", ".onnx") and f.is_file():
        b = jh(json.loads(f.read_text())) if f.suffix == ".json" else h(f.read_bytes())
        print("export", f.relative_to(W/"export"), b)
PY
