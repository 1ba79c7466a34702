"""The report of the sparse-inference benchmark (``python -m benchmarks.sparse_inference``): the printed
tables, the issue's targets against what was measured, and the quality/latency plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import format_value

__all__ = ["report_text", "targets", "save_png"]


def _table(rows: list[dict], cols: list[tuple[str, str, str]]) -> str:
    """:func:`benchmarks.common.format_table` of (header, key, format spec) columns, right-aligned."""
    return common.format_table(rows, [k for _, k, _ in cols], [h for h, _, _ in cols],
                               digits={k: spec for _, k, spec in cols}, align="right")


def report_text(res: dict[str, Any]) -> str:
    out = []
    mach = res.get("machine") or {}
    if mach:
        out.append(f"machine: {mach.get('cpu')}, {mach.get('cores')} cores; load average before "
                   f"{'/'.join(f'{v:.2f}' for v in mach.get('load_average', []))}, after "
                   f"{'/'.join(f'{v:.2f}' for v in mach.get('load_average_after', []))}")
    ls = res.get("layer_sweep")
    if ls:
        out += _sweep_text(ls, res["threads"])
    for key, what, field in (("width_break_even", "float32", "sparse_curve"),
                             ("width_break_even_int8", "int8 rows against int8 dense", "sparse_int8_curve")):
        wb = res.get(key)
        if wb:
            out.append(f"2. Break-even by width, {what}: "
                       + "; ".join(f"{w['width']}: {format_value(w['break_even'], 3)}"
                                   + (f" (profile {w['profile_break_even']:.3f})"
                                      if w.get("profile_break_even") is not None else "") for w in wb["widths"])
                       + f"; {ls['width'] if ls else '?'}: {format_value(wb['r_be'], 3)}  (as {field}: "
                       + ", ".join(f"({n}, {r:.2f})" for n, r in wb["curve"]) + ")")
    bs = res.get("batch_sweep")
    if bs:
        out.append("3. Union form (max batch 8) vs dense")
        out.append(_table(bs, [("batch", "batch", ""), ("rate", "rate", ".2f"), ("union rate", "union_rate", ".3f"),
                               ("dense ms", "dense_ms", ".3f"), ("union ms", "union_ms", ".3f"),
                               ("x dense", "speedup", ".2f"), ("max|d|", "max_abs_diff", ".1e")]))
    qs = res.get("quality")
    if qs:
        out.append("4. Quality against latency (batch 1; spike rates of input and hidden layers on the test images)")
        rows = [{**r, "rates": "/".join(f"{v:.3f}" for v in r["spike_rates"])} for r in qs]
        out.append(_table(rows, [("model", "model", ""), ("target", "target", ".2f"), ("rates", "rates", ""),
                                 ("PSNR", "psnr", ".2f"), ("1-MAE %", "seed_accuracy", ".2f"),
                                 ("dense ms", "dense_ms", ".4f"), ("sparse ms", "sparse_ms", ".4f"),
                                 ("auto ms", "auto_ms", ".4f"), ("x dense", "speedup_sparse", ".2f"),
                                 ("auto sparse", "auto_sparse_connections", ""),
                                 ("max|d|", "max_abs_diff_sparse", ".1e")]))
    md = res.get("memory")
    if md:
        r, ld = md["rows"], md["load"]
        out.append(f"5. Memory: sizes {md['sizes']}, weights {md['weights_bytes'] / 2**20:.0f} MiB = "
                   f"{md['weights_over_limit']:.2f}x the limit {md['limit_mib']} MiB ({md['limit_kind']})")
        if r.get("ok"):
            out.append(f"   rows: peak RSS {r['VmHWM'] / 2**20:.1f} MiB, peak address space {r['VmPeak'] / 2**20:.1f} MiB, "
                       f"spike rates {['/'.join(f'{v:.3f}' for v in x[:-1]) for x in r['rates'][:3]]}..., "
                       f"{np.median(r['ms_per_call']):.1f} ms/call, read {r['bytes_read'] / 2**20:.0f} MiB over "
                       f"{len(r['rates'])} calls; max |Δ| vs dense ONNX {r['max_abs_diff_vs_dense_onnx']:.2e}, vs "
                       f"engine {r['max_abs_diff_vs_engine']:.2e}")
        else:
            out.append(f"   rows: FAILED: {r.get('error')}")
        out.append(f"   load under the same limit: {'ran (unexpected)' if ld.get('ok') else 'refused: ' + str(ld.get('error'))[:160]}")
    tg = res.get("targets")
    if tg:
        out.append("Targets:")
        out += [f"  [{'x' if v['met'] else ' '}] {k}: {v['value']}" for k, v in tg.items()]
    return "\n".join(out)


def _sweep_text(ls: dict[str, Any], threads: int) -> list[str]:
    """The layer sweep's lines: its settings, the table, the measured break-even."""
    out = []
    bw = ls["bandwidth_gbs"]
    out.append(f"1. Layer sweep: {ls['width']}x{ls['width']} float32, batch 1, {threads} thread, profile "
               f"{ls['profile']} (break-even here {format_value(ls.get('profile_effective_break_even'), 3)}); "
               f"overhead {ls['overhead_ms']['sparse']:.3f} ms (sparse file, no active unit); bandwidth "
               f"{bw['used']:.1f} GB/s (numpy sum {bw['numpy_sum_256MiB']:.1f}, dense GEMV {bw['dense_gemv']:.1f})")
    out.append(_table(ls["rows"], [("rate", "rate", ".2f"), ("G", "groups", ""), ("dense ms", "dense_ms", ".3f"),
                                   ("sparse ms", "sparse_ms", ".3f"), ("x dense", "speedup_sparse", ".1f"),
                                   ("G before", "groups_before", ""), ("2MiB-G ms", "sparse_2mib_groups_ms", ".3f"),
                                   ("x dense", "speedup_sparse_2mib_groups", ".1f"),
                                   ("auto ms", "auto_ms", ".3f"), ("auto", "auto_path", ""),
                                   ("choice/best", "auto_choice_vs_best", ".2f"),
                                   ("auto/best", "auto_vs_best", ".2f"), ("floor ms", "floor_ms", ".3f"),
                                   ("/floor", "sparse_vs_floor", ".2f"), ("int8 dn ms", "int8_dense_ms", ".3f"),
                                   ("int8 sp ms", "int8_sparse_ms", ".3f"),
                                   ("x int8 dn", "speedup_int8_sparse", ".1f"),
                                   ("x f32 dn", "speedup_int8_sparse_vs_float_dense", ".1f"),
                                   ("max|d| sparse", "max_abs_diff_sparse", ".1e"),
                                   ("max|d| int8", "max_abs_diff_int8_sparse", ".1e")]))
    out.append(f"   measured break-even (sparse = dense): {format_value(ls['break_even_measured'], 3)}; int8 sparse "
               f"= int8 dense: {format_value(ls.get('break_even_int8_measured'), 3)}")
    return out


def targets(res: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures against what was measured."""
    t: dict[str, Any] = {}
    ls = res.get("layer_sweep")
    if ls:
        by = {r["rate"]: r for r in ls["rows"]}
        if 0.1 in by:
            t["sparse >= 5x dense at 10 %"] = {"value": round(by[0.1]["speedup_sparse"], 2),
                                               "met": by[0.1]["speedup_sparse"] >= 5}
        if 0.05 in by:
            t["sparse >= 10x dense at 5 %"] = {"value": round(by[0.05]["speedup_sparse"], 2),
                                               "met": by[0.05]["speedup_sparse"] >= 10}
        for rate, goal in ((0.1, 5), (0.05, 10)):
            if rate in by and "int8_dense_ms" in by[rate]:
                got = by[rate]["speedup_int8_sparse"]
                t[f"(int8 sparse against int8 dense at {rate:.0%}, goal of float32: {goal}x)"] = {
                    "value": round(got, 2), "met": got >= goal}
        worst = max(r["auto_choice_vs_best"] for r in ls["rows"])
        t["auto's choice <= 1.10x the better of dense/sparse, 1-100 %"] = {"value": round(worst, 3),
                                                                           "met": worst <= 1.10}
        raw = max(r["auto_vs_best"] for r in ls["rows"])
        t["(auto's own file timed: <= 1.10x the better)"] = {"value": round(raw, 3), "met": raw <= 1.10}
        sparse_side = [r for r in ls["rows"] if r["rate"] <= 0.2]
        if sparse_side:
            worst_floor = max(r["sparse_vs_floor"] for r in sparse_side)
            t["sparse latency <= 2x floor (rates <= 20 %)"] = {"value": round(worst_floor, 2), "met": worst_floor <= 2}
        dmax = max(r["max_abs_diff_sparse"] for r in ls["rows"])
        t["sparse outputs within 1e-5 of dense (float32)"] = {"value": dmax, "met": dmax <= 1e-5}
    md = res.get("memory")
    if md:
        r = md["rows"]
        t["weights >= 2x limit, peak RSS under it at 10 %"] = {
            "value": f"{md['weights_over_limit']:.2f}x, peak RSS {r.get('VmHWM', 0) / 2**20:.1f} MiB < {md['limit_mib']} MiB",
            "met": bool(md["weights_over_limit"] >= 2 and md["peak_rss_under_limit"])}
        t["big model outputs within 1e-5 of dense"] = {"value": r.get("max_abs_diff_vs_dense_onnx"),
                                                       "met": md["outputs_within_1e-5"]}
    return t


def save_png(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qs = res.get("quality") or []
    ls = res.get("layer_sweep")
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    labels = sorted({r["model"] for r in qs}, key=lambda m: not m.startswith("few-shot"))
    for ax, label in zip(axes[:2], labels):
        rows = [r for r in qs if r["model"] == label]
        for key, style in (("dense_ms", "o-"), ("sparse_ms", "s-"), ("auto_ms", "^--")):
            ax.plot([r[key] for r in rows], [r["psnr"] for r in rows], style, label=key.replace("_ms", ""))
        for r in rows:
            ax.annotate(f"t={r['target']:g}", (r["sparse_ms"], r["psnr"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xlabel("latency per call, batch 1 (ms)")
        ax.set_ylabel("PSNR on 500 test images (dB)")
        ax.set_title(f"{label}: quality vs latency")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if ls:
        rates = [r["rate"] * 100 for r in ls["rows"]]
        ax = axes[2]
        for key, style in (("dense_ms", "o-"), ("sparse_ms", "s-"), ("auto_ms", "^--"), ("int8_sparse_ms", "d:"),
                           ("int8_dense_ms", "x:"),
                           ("floor_ms", "k:")):
            ax.plot(rates, [r[key] for r in ls["rows"]], style, label=key.replace("_ms", ""))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("units active (%)")
        ax.set_ylabel("latency per call (ms)")
        ax.set_title(f"{ls['width']}x{ls['width']} layer, batch 1")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    from zor.common.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
