"""``report.md`` of an export: architecture, bit mix, per-layer latency/resources, accuracy, time."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

from quasar_vit.space import BLOCK_LINEARS, SubnetConfig


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _plots(plot_dir: Path, subnet: SubnetConfig, hw: Mapping[str, Any]) -> dict[str, str]:
    """Write the PNG plots; returns {kind: relative path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    lin = subnet.linear_layers()
    names = [l.name for l in lin]
    n8 = [l.n8_rows for l in lin]
    n4 = [l.out_features - l.n8_rows for l in lin]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.5))
    ax.bar(names, n8, label="8-bit rows", color="#d95f02")
    ax.bar(names, n4, bottom=n8, label="4-bit rows", color="#1b9e77")
    ax.set_ylabel("output rows")
    ax.set_title("Per-layer bit mix")
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / "bitmix.png", dpi=110)
    plt.close(fig)
    out["bitmix"] = f"{plot_dir.name}/bitmix.png"

    layers = hw.get("layers", [])
    if layers:
        colors = {"fabric": "#7570b3", "host": "#e7298a"}
        fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(layers)), 3.5))
        ax.bar(range(len(layers)), [l["ms"] for l in layers], color=[colors.get(l["unit"], "grey") for l in layers])
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([l["name"] for l in layers], rotation=90, fontsize=6)
        ax.set_ylabel("ms")
        ax.set_title("Predicted per-layer latency (purple: fabric, pink: ARM host)")
        fig.tight_layout()
        fig.savefig(plot_dir / "latency.png", dpi=110)
        plt.close(fig)
        out["latency"] = f"{plot_dir.name}/latency.png"

        by_op: dict[str, float] = defaultdict(float)
        for l in layers:
            by_op[f"{l['op']} ({l['unit']})"] += l["ms"]
        fig, ax = plt.subplots(figsize=(5.5, 4))
        keys = sorted(by_op, key=by_op.__getitem__, reverse=True)
        ax.pie([by_op[k] for k in keys], labels=keys, autopct="%1.0f%%", textprops={"fontsize": 8})
        ax.set_title("Where the time goes")
        fig.tight_layout()
        fig.savefig(plot_dir / "time_breakdown.png", dpi=110)
        plt.close(fig)
        out["time"] = f"{plot_dir.name}/time_breakdown.png"
    return out


def write_report(
    directory: Path, subnet: SubnetConfig, hw: Mapping[str, Any], evaluation: Mapping[str, Any], meta: Mapping[str, Any]
) -> Path:
    """Write ``report.md`` (and ``plots/*.png``) into ``directory``."""
    plots = _plots(directory / "plots", subnet, hw)
    L = _summary(subnet, hw, evaluation, meta)
    L += _architecture(subnet)
    L += _bit_mix(subnet, plots)
    L += _accelerator(hw)
    L += _latency(hw, plots)
    L += _time(hw, plots)
    L.append("## Files\n")
    for name, what in meta.get("files", {}).items():
        L.append(f"- `{name}`: {what}")
    L.append("")
    path = directory / "report.md"
    path.write_text("\n".join(L) + "\n")
    return path


EVALUATION_ROWS = (
    ("top1_fake_quant", "top-1, fake-quant PyTorch"),
    ("top1_integer", "top-1, integer engine"),
    ("agreement_integer", "label agreement integer vs PyTorch"),
    ("agreement_onnx", "label agreement ONNX vs PyTorch"),
)


def _summary(
    subnet: SubnetConfig, hw: Mapping[str, Any], evaluation: Mapping[str, Any], meta: Mapping[str, Any]
) -> list[str]:
    """Title, provenance and the summary table (throughput, size, accuracy)."""
    tot = hw["total"]
    L = [f"# Quasar-ViT export: {meta.get('name', 'subnet')}\n"]
    L.append(
        f"Checkpoint `{meta.get('checkpoint')}` (step {meta.get('step')}), config `{meta.get('config_name')}`, "
        f"platform **{hw['platform']}**.\n"
    )
    L.append("## Summary\n")
    L.append("| quantity | value |\n|---|---|")
    L.append(f"| predicted throughput | {tot['fps']:.1f} FPS ({tot['latency_ms']:.3f} ms/image, batch 1) |")
    L.append(f"| fabric / ARM host time | {tot['fabric_ms']:.3f} ms / {tot['host_ms']:.3f} ms |")
    if "fps_host_2x" in tot:
        L.append(f"| FPS with host costs at 2x / 0.5x | {tot['fps_host_2x']:.1f} / {tot['fps_host_half']:.1f} |")
    L.append(f"| compute | {tot['gmacs'] * 1e3:.2f} MMACs |")
    L.append(f"| weights (packed 4/8-bit) | {subnet.weight_bytes() / 1e3:.1f} kB, {subnet.num_params()} parameters |")
    L.append(f"| 8-bit rows (blocks) | {100 * subnet.share_8bit():.1f} % |")
    for k, label in EVALUATION_ROWS:
        if evaluation.get(k) is not None:
            L.append(f"| {label} | {evaluation[k]:.2f} % |")
    if evaluation.get("images"):
        L.append(f"| evaluated on | {evaluation['images']} {evaluation.get('split', 'test')} images |")
    if evaluation.get("note"):
        L.append(f"| note | {evaluation['note']} |")
    L.append("")
    return L


def _architecture(subnet: SubnetConfig) -> list[str]:
    """The geometry and the per-block table."""
    L = ["## Architecture\n"]
    g = subnet.geometry
    L.append(
        f"embed dim {subnet.embed_dim}, depth {subnet.depth}, head dim {g.head_dim}, "
        f"{g.img_size}x{g.img_size}x{g.in_chans} input, {g.patch_size}x{g.patch_size} "
        f"patches ({g.num_tokens} tokens), {g.num_classes} classes; patch embedding "
        f"{g.patch_embed_bits}-bit, head {g.head_bits}-bit.\n"
    )
    per_linear = subnet.share_granularity == "linear"
    share_col = "8-bit share (" + "/".join(BLOCK_LINEARS) + ")" if per_linear else "8-bit share"
    L.append(f"| block | heads | qkv dim | MLP ratio | MLP hidden | {share_col} |\n|---|---|---|---|---|---|")
    for i in range(subnet.depth):
        shares = subnet.block_shares(i) if per_linear else subnet.block_shares(i)[:1]
        L.append(
            f"| {i} | {subnet.num_heads[i]} | {subnet.qkv_dim(i)} | {subnet.mlp_ratios[i]:g} | "
            f"{subnet.mlp_hidden(i)} | {'/'.join(f'{s:g}' for s in shares)} |"
        )
    L.append("")
    return L


def _bit_mix(subnet: SubnetConfig, plots: Mapping[str, str]) -> list[str]:
    """The 4/8-bit rows and weight bytes of every linear layer."""
    L = ["## Per-layer bit mix\n"]
    if "bitmix" in plots:
        L.append(f"![bit mix]({plots['bitmix']})\n")
    L.append(
        "| layer | in | out | 8-bit rows | 4-bit rows | 8-bit share | weight bytes |\n|---|---|---|---|---|---|---|"
    )
    for l in subnet.linear_layers():
        wb = l.in_features * (l.n8_rows + 0.5 * (l.out_features - l.n8_rows))
        L.append(
            f"| {l.name} | {l.in_features} | {l.out_features} | {l.n8_rows} | {l.out_features - l.n8_rows} | "
            f"{100 * l.share_8bit:.0f} % | {wb:.0f} |"
        )
    L.append("")
    return L


def _accelerator(hw: Mapping[str, Any]) -> list[str]:
    """The design in one paragraph and its resource table."""
    design, res = hw["design"], hw["resources"]
    L = ["## Accelerator\n"]
    if design.get("accelerator") == "rtl-core":
        L.append(
            f"RTL core `qv_gemm_core`: {design['R']} row slots x {design['T']} tokens x {design['KP']} lanes "
            f"({design['units']} W4A6 units) at {design['clock_mhz']:g} MHz, a {design['WB']}-bit weight stream; "
            f"memories for {design['T'] * design['tiles_max']} tokens; LayerNorm, softmax and GELU on the fabric. "
            "Cycles: the RTL's schedule model (equal to Verilator's on every simulated step); resources: the "
            "resource model fitted to Yosys syntheses (docs/rtl.md). Full parameters: `accelerator.json`.\n"
        )
    else:
        L.append(
            f"W4A6 array {design['pe_rows']} x {design['pe_cols']} ({design['units']} units, packing "
            f"{design['packing']}, {design['lut_cols']} LUT-only columns) at {design['clock_mhz']:g} MHz; tiles "
            f"Tn={design['tile_tokens']} tokens, Tm={design['pe_rows']} rows, Tk={design['tile_k']}; input buffer in "
            f"{design['input_buffer_mem']}. Full parameters: `accelerator.json`.\n"
        )
    L.append("| resource | used | total | % | cap % |\n|---|---|---|---|---|")
    for k in ("lut", "ff", "dsp", "bram", "uram"):
        r = res.get(k)
        if r and r.get("total"):
            L.append(f"| {k.upper()} | {r['used']} | {r['total']} | {r['percent']:.1f} | {r['cap_percent']:.0f} |")
    L.append("")
    return L


def _latency(hw: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """The per-layer latency table."""
    L = ["## Per-layer latency\n"]
    if "latency" in plots:
        L.append(f"![latency]({plots['latency']})\n")
    L.append("| layer | op | unit | MACs | ms | bound | array use |\n|---|---|---|---|---|---|---|")
    for l in hw.get("layers", []):
        use = l.get("array_utilisation")
        L.append(
            f"| {l['name']} | {l['op']} | {l['unit']} | {l['macs']} | {l['ms']:.4f} | {l['bound']} | "
            f"{'' if use is None else f'{100 * use:.0f} %'} |"
        )
    L.append("")
    return L


def _time(hw: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    """The time per kind of operation (op and unit)."""
    L = ["## Where the time goes\n"]
    if "time" in plots:
        L.append(f"![time]({plots['time']})\n")
    by_op: dict[str, float] = defaultdict(float)
    for l in hw.get("layers", []):
        by_op[f"{l['op']} ({l['unit']})"] += l["ms"]
    total = sum(by_op.values()) or 1.0
    L.append("| operation | ms | share |\n|---|---|---|")
    for k in sorted(by_op, key=by_op.__getitem__, reverse=True):
        L.append(f"| {k} | {by_op[k]:.4f} | {100 * by_op[k] / total:.1f} % |")
    L.append("")
    return L


__all__ = ["write_report"]
