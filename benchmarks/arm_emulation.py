"""ARM emulation benchmark: what proving the runtime on emulated Raspberry Pi cores costs, and its figures.

    sudo .venv/bin/python -m benchmarks.arm_emulation [--json PATH] [--warm 3] [--cache DIR] [--keep-cache]

What it does (as root, like ``benchmarks/arm/emulate.sh``, which it runs):

1. cold: ``emulate.sh`` with an empty cache folder (a temporary one unless ``--cache``):
   the arm64 Debian root is built with mmdebstrap, the aarch64 wheels downloaded (pip's
   own HTTP cache may serve them), the project wheel built, the models exported on
   the host, and the check run on cortex-a53, cortex-a72 and cortex-a76;
2. warm: ``--warm`` more runs on the same cache (root, wheel and exports reused);
   wall seconds and the CPU seconds of the whole process tree, median over the runs,
   and the warm/cold ratio measured in this run;
3. per core (from the last warm run): detected profile, float32 / stream / int8
   parity figures against the x86-64 host (int8: the kernel's sums, their distance to
   the numpy reference, the share of the quantisation bound used), the checks that passed;
4. the installed size of the runtime on aarch64 (zor-edge + numpy + onnxruntime, and
   everything pip installs with them), from the distributions' RECORD files;
5. how slow emulation is: the emulated ``zor-bench`` latencies (inside qemu) over
   the same ``zor-bench`` run natively on this host in the same run, per core. These
   ratios say why emulated timings are not Raspberry Pi speed figures.

Prints a table; ``--json`` writes every figure. Exit 77 (with the reason) where the
machine cannot run the emulation, 1 when a check failed.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import click

from benchmarks import common

__all__ = ["run_emulation", "native_bench", "summarise", "format_table", "main"]

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "arm" / "emulate.sh"
BENCH_ARGS = ["--threads", "1", "--batch", "8", "--calls", "5", "--repeats", "1", "--no-rss"]   # as check.py


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_emulation(cache: Path, json_path: Path, keep_work: bool = False) -> dict[str, Any]:
    """One ``emulate.sh`` run: its report, wall seconds and CPU seconds of its process tree."""
    args = ["bash", str(SCRIPT), "--cache", str(cache), "--json", str(json_path)] + (["--keep-work"] if keep_work else [])
    cpu0, t0 = _children_cpu(), time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if p.returncode == 77:
        print(p.stderr, file=sys.stderr)
        raise SystemExit(77)
    if not json_path.is_file():
        print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"emulate.sh exit {p.returncode} wrote no report")
    work = None
    for line in p.stderr.splitlines():
        if "work folder kept:" in line:
            work = Path(line.split("work folder kept:", 1)[1].strip())
    return {"report": json.loads(json_path.read_text()), "wall_s": wall, "cpu_s": cpu, "rc": p.returncode,
            "work": work}


def native_bench(work: Path, python: str) -> Optional[dict[str, Any]]:
    """``zor-bench`` on the host itself, on the models and inputs of the emulated runs."""
    out = work / "out" / "bench-native.json"
    cmd = [python, "-c", "import sys; from zor.runtime.cli import bench_main; sys.exit(bench_main())",
           str(work / "fewshot.onnx"), str(work / "fewshot-int8.onnx"), "--device", "rpi4", *BENCH_ARGS,
           "--input", str(work / "fewshot.in.npy"), "--json", str(out)]
    runs = []
    for _ in range(3):      # median of three: this host is shared
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if p.returncode != 0:
            print(f"native zor-bench failed: {p.stderr[-500:]}", file=sys.stderr)
            return None
        runs.append(json.loads(out.read_text()))
    keys = ("p50_ms_b1", "p50_ms_b8")
    return {label: {k: statistics.median(r["models"][label][k] for r in runs) for k in keys}
            for label in runs[0]["models"]}


def _check(core: dict, name: str) -> dict:
    return next((c for c in core.get("checks", []) if c["name"] == name), {})


def summarise(cold: dict, warm: list[dict], native: Optional[dict]) -> dict[str, Any]:
    last = warm[-1]["report"] if warm else cold["report"]
    med = (lambda xs: statistics.median(xs) if xs else None)
    setup = {
        "cold": {"wall_s": cold["wall_s"], "cpu_s": cold["cpu_s"], "timings": cold["report"]["timings"]},
        "warm": {"runs": len(warm), "wall_s_median": med([w["wall_s"] for w in warm]),
                 "cpu_s_median": med([w["cpu_s"] for w in warm]),
                 "setup_s_median": med([w["report"]["timings"]["setup_s"] for w in warm]),
                 "states": [{k: w["report"]["timings"].get(k) for k in ("root_state", "wheel_state", "fixtures_state")}
                            for w in warm]},
    }
    if warm:
        setup["warm_over_cold_wall"] = setup["warm"]["wall_s_median"] / cold["wall_s"]
    cores = {}
    for name, r in last["cores"].items():
        f32, i8, sf = _check(r, "fewshot-float32"), _check(r, "fewshot-int8"), _check(r, "stateful-stream")
        bench = (_check(r, "zor-bench-cli").get("report") or {}).get("models", {})
        entry = {
            "detected_profile": r.get("detected_profile"), "expected_profile": r.get("expected_profile"),
            "midr": (r.get("cpu") or {}).get("midr"), "features": (r.get("cpu") or {}).get("features"),
            "features_vs_genuine_pi": r.get("features_vs_genuine_pi"),
            "onnxruntime_cpuinfo": r.get("onnxruntime_cpuinfo"),
            "float32": {k: f32.get(k) for k in ("output_max_abs", "bit_exact", "spike_mismatches", "spikes_compared")},
            "stream": {k: sf.get(k) for k in ("steps", "output_max_abs", "bit_exact", "spike_mismatches")},
            "int8": {k: i8.get(k) for k in ("kernel", "output_max_abs_vs_reference", "output_share_of_bound",
                                            "output_max_abs_vs_host_int8", "output_max_abs_vs_host_float32",
                                            "spike_agreement_vs_host_float32", "metric_float32", "metric_int8",
                                            "metric_drop", "tolerance")},
            "checks_passed": [c["name"] for c in r.get("checks", []) if c["passed"]],
            "checks_failed": [c["name"] for c in r.get("checks", []) if not c["passed"]],
            "emulated_bench_ms": {label: {k: m.get(k) for k in ("p50_ms_b1", "p50_ms_b8")} for label, m in bench.items()},
        }
        if native:
            entry["emulation_slowdown"] = {
                label: {k: m[k] / native[label][k] for k in ("p50_ms_b1", "p50_ms_b8") if native.get(label)}
                for label, m in entry["emulated_bench_ms"].items() if label in native}
        cores[name] = entry
    return {"what": "zor runtime on emulated Raspberry Pi cores (benchmarks/arm/emulate.sh)",
            "note": "wall and CPU seconds on this shared x86-64 host; emulated latencies are not Pi speed figures",
            "setup": setup, "cores": cores, "installed": last["installed"], "host": last.get("host"),
            "native_bench_ms": native, "passed": bool(last["passed"]) and bool(cold["report"]["passed"])}


def format_table(s: dict[str, Any]) -> str:
    c, w = s["setup"]["cold"], s["setup"]["warm"]
    t = c["timings"]
    lines = ["setup (wall s on this shared host; CPU s of the whole process tree)",
             f"  cold   wall {c['wall_s']:6.1f}  cpu {c['cpu_s']:6.1f}   root {t.get('root_s', 0):.1f} s "
             f"(debootstrap {t.get('root_debootstrap_s', 0):.1f}, wheels {t.get('root_wheels_s', 0):.1f}), "
             f"project wheel {t.get('wheel_s', 0):.1f}, host exports {t.get('fixtures_s', 0):.1f}, "
             f"setup {t.get('setup_s', 0):.1f}, total {t.get('total_s', 0):.1f}"]
    if w["runs"]:
        lines.append(f"  warm   wall {w['wall_s_median']:6.1f}  cpu {w['cpu_s_median']:6.1f}   setup "
                     f"{w['setup_s_median']:.1f} s (median of {w['runs']}; states {w['states'][-1]}); "
                     f"warm/cold wall {s['setup']['warm_over_cold_wall']:.2f}")
    head = ("core", "profile", "f32 max|Δ|", "stream max|Δ|", "spikes≠", "int8 |Δ| host-int8", "int8 |Δ| host-f32",
            "int8 agr L1", "int8 drop", "checks", "emul. slowdown b1/b8 (f32)")
    rows = [head]
    for core, e in s["cores"].items():
        agree = e["int8"].get("spike_agreement_vs_host_float32") or []
        slow = (e.get("emulation_slowdown") or {}).get("float32") or {}
        rows.append((core, str(e["detected_profile"]), f"{e['float32']['output_max_abs']:.3g}",
                     f"{e['stream']['output_max_abs']:.3g}",
                     str((e["float32"]["spike_mismatches"] or 0) + (e["stream"]["spike_mismatches"] or 0)),
                     f"{e['int8']['output_max_abs_vs_host_int8']:.3g}", f"{e['int8']['output_max_abs_vs_host_float32']:.3g}",
                     f"{100 * agree[1]:.2f} %" if len(agree) > 1 else "-", f"{e['int8']['metric_drop']:.4f}",
                     f"{len(e['checks_passed'])}/{len(e['checks_passed']) + len(e['checks_failed'])}",
                     f"{slow.get('p50_ms_b1', float('nan')):.0f}x / {slow.get('p50_ms_b8', float('nan')):.0f}x"
                     if slow else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines.append("")
    lines += ["  ".join(v.ljust(wd) for v, wd in zip(r, widths)).rstrip() for r in rows]
    inst = s["installed"]
    lines.append("")
    lines.append("installed on aarch64 (pip RECORD sizes, no bytecode): " + ", ".join(
        f"{k} {v['version']} {v['bytes'] / 2**20:.1f} MiB" for k, v in sorted(inst["distributions"].items())))
    lines.append(f"  runtime ({inst['runtime_bytes_means']}) {inst['runtime_bytes'] / 2**20:.1f} MiB; "
                 f"with its other dependencies {inst['all_bytes'] / 2**20:.1f} MiB")
    for core, e in s["cores"].items():
        fv = e.get("features_vs_genuine_pi") or {}
        lines.append(f"{core}: MIDR {e['midr']}; checks passed: {', '.join(e['checks_passed'])}"
                     + (f"; FAILED: {', '.join(e['checks_failed'])}" if e["checks_failed"] else "")
                     + (f"; qemu vs genuine Pi features +{','.join(fv.get('emulated_only', [])) or 'none'} "
                        f"-{','.join(fv.get('genuine_only', [])) or 'none'}" if fv else ""))
    lines.append(s["note"])
    return "\n".join(lines)


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures here.")
@click.option("--warm", type=click.IntRange(min=0), default=3, help="Warm runs after the cold one (median reported).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Cache folder for the cold run (must be empty or absent; default: a temporary one).")
@click.option("--keep-cache", is_flag=True, help="Keep the cold run's cache folder.")
def main(json_path: Optional[Path], warm: int, cache: Optional[Path], keep_cache: bool) -> None:
    """ARM emulation benchmark: what proving the runtime on emulated Raspberry Pi cores costs, and its figures.

    Run as root (like benchmarks/arm/emulate.sh, which it runs). Exit 77 (with the reason) where the
    machine cannot run the emulation, 1 when a check failed.
    """
    common.check_json_folder(json_path)
    cache_dir = cache or Path(tempfile.mkdtemp(prefix="zor-arm-bench-cache-"))
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise click.BadParameter(f"{cache_dir}: expected an empty or absent folder for the cold run",
                                 param_hint="--cache")
    tmp = Path(tempfile.mkdtemp(prefix="zor-arm-bench-"))
    work = None
    try:
        click.echo(f"cold run (cache {cache_dir}) ...", err=True)
        cold = run_emulation(cache_dir, tmp / "cold.json")
        warm_runs = []
        for i in range(warm):
            click.echo(f"warm run {i + 1}/{warm} ...", err=True)
            warm_runs.append(run_emulation(cache_dir, tmp / f"warm{i}.json", keep_work=i == warm - 1))
        work = warm_runs[-1]["work"] if warm_runs else None
        native = native_bench(work, sys.executable) if work is not None else None
        summary = summarise(cold, warm_runs, native)
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        if cache is None and not keep_cache:
            shutil.rmtree(cache_dir, ignore_errors=True)
    click.echo(format_table(summary))
    if json_path is not None:
        common.write_json(json_path, summary)
        click.echo(f"wrote {json_path}", err=True)
    if not summary["passed"]:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
