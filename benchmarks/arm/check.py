"""The check that runs inside the emulated aarch64 root, on the installed runtime alone.

``emulate.sh`` runs it once per emulated core (``QEMU_CPU`` = cortex-a53 / a72 / a76,
i.e. Raspberry Pi 3 / 4 / 5) with the work folder from ``prepare.py`` bound at
``/mnt/work``. It imports only what ``pip install zor-edge`` puts on a Pi (numpy,
onnxruntime, click and this project's wheel; torch and onnx must be absent) and
checks, by name:

    aarch64-python     the interpreter is an aarch64 build (no host code sneaks in)
    runtime-only       torch and onnx cannot be imported; numpy/onnxruntime versions
    cpu-identity       /proc/cpuinfo (written from the CPU's MIDR_EL1 and HWCAPs by
                       kernel_cpuinfo.py) names the core the CPU reports right now
    detect-profile     zor.devices.detect() picks the expected Pi profile, or the
                       check fails with detect's own reason
    model-auto-profile Model(device="auto") configures onnxruntime with that profile
    fewshot-float32    outputs within 1e-5 of the x86-64 host's, spikes identical
    fewshot-int8       reproduces the int8 graph's arithmetic for this CPU's kernel
                       (qdq.py: exact int32 sums on aarch64) within 1e-5, departs from
                       the host float32 run by no more than the quantisation bound,
                       keeps the export's spike budget and max drop (see parity.py)
    stateful-stream    a Stream over 6 steps: outputs within 1e-5, spikes identical
    zor-devices-cli    ``zor-devices detect --json`` (the installed console script)
    zor-bench-cli      ``zor-bench`` on the float32 and int8 models; its timings are
                       EMULATED (qemu-user on x86-64), not Raspberry Pi speed figures

It writes a JSON report and exits 0 when every check passed, 1 otherwise.

Example (inside the root):
    QEMU_CPU=cortex-a72 python3 /mnt/work/check.py --core cortex-a72 --expect rpi4 --out /mnt/work/out/cortex-a72.json
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import click  # installed in the root beside numpy and onnxruntime (emulate.sh), as pip install zor-edge does

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

__all__ = ["run_checks", "main"]

EMULATED = "EMULATED under qemu-user on x86-64: not Raspberry Pi speed figures"


def _load(folder: Path, name: str) -> dict:
    import numpy as np

    with np.load(folder / name, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class Checks:
    """Named checks with their figures; a failing check records its reason and the run goes on."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def run(self, name: str, fn: Callable[[], dict]) -> dict:
        t = time.perf_counter()
        try:
            detail = fn()
            passed = bool(detail.pop("passed", True))
            reason = detail.pop("reason", "")
        except Exception as exc:  # a check that crashes is a failed check, with its reason
            detail, passed = {"traceback": traceback.format_exc(limit=4)}, False
            reason = f"{type(exc).__name__}: {exc}"
        entry = {"name": name, "passed": passed, "reason": reason, "seconds_emulated": time.perf_counter() - t,
                 **detail}
        self.results.append(entry)
        print(f"  [{'pass' if passed else 'FAIL'}] {name}{': ' + reason if reason else ''}", flush=True)
        return entry


def _console_script(name: str, args: list[str]) -> subprocess.CompletedProcess:
    """Run an installed console script (pip's wrapper of the wheel's entry point)."""
    return subprocess.run([name] + args, capture_output=True, text=True, timeout=600)


def run_checks(core: str, expect: str, work: Path) -> dict[str, Any]:
    """Every check of the module docstring for emulated ``core``; the report as a dict."""
    t_start = time.perf_counter()
    manifest = json.loads((work / "manifest.json").read_text())
    checks = Checks()
    report: dict[str, Any] = {"core": core, "expected_profile": expect, "qemu_cpu": os.environ.get("QEMU_CPU")}

    def arch() -> dict:
        m = platform.machine()
        return {"passed": m == "aarch64", "machine": m, "python": platform.python_version(),
                "executable": sys.executable, "reason": "" if m == "aarch64" else f"expected aarch64, got {m}"}

    checks.run("aarch64-python", arch)

    t = time.perf_counter()
    import numpy as np
    import onnxruntime as ort
    from zor.devices import detect
    from zor.runtime import Model

    import zor
    report["import_seconds_emulated"] = time.perf_counter() - t

    def runtime_only() -> dict:
        present = [m for m in ("torch", "onnx") if importlib.util.find_spec(m) is not None]
        return {"passed": not present, "numpy": np.__version__, "onnxruntime": ort.__version__,
                "zor_edge": zor.__version__, "providers": ort.get_available_providers(),
                "zor_file": zor.__file__,
                "reason": f"{', '.join(present)} importable: the check must run on the runtime alone" if present else ""}

    checks.run("runtime-only", runtime_only)

    def cpu_identity() -> dict:
        from kernel_cpuinfo import identity

        ident = identity()
        text = Path("/proc/cpuinfo").read_text()
        from zor.devices import parse_cpuinfo

        seen = parse_cpuinfo(text)
        ok = seen.parts == (ident["part"],) and seen.implementer == ident["implementer"]
        return {"passed": ok, "cpu": ident, "proc_cpuinfo_parts": list(seen.parts),
                "proc_cpuinfo_isa": list(seen.isa),
                "reason": "" if ok else f"/proc/cpuinfo names part {seen.parts}, the CPU reports {ident['part']}"}

    ident = checks.run("cpu-identity", cpu_identity)
    report["cpu"] = ident.get("cpu")

    def detect_profile() -> dict:
        d = detect()
        ok = d.matched and d.profile.name == expect
        return {"passed": ok, "profile": d.profile.name, "matched": d.matched, "detail": d.reason,
                "reason": "" if ok else f"expected {expect}, detect() said {d.profile.name}: {d.reason}"}

    det = checks.run("detect-profile", detect_profile)
    report["detected_profile"] = det.get("profile")

    models: dict[str, Any] = {}

    def load(key: str) -> Any:
        if key not in models:
            models[key] = Model(work / manifest["models"][key]["file"], device="auto", threads=1)
        return models[key]

    def auto_profile() -> dict:
        m = load("fewshot")
        ok = m.profile.name == expect
        return {"passed": ok, "profile": m.profile.name, "providers": m.providers, "notes": m.notes,
                "reason": "" if ok else f"Model(device='auto') chose {m.profile.name}, expected {expect}"}

    checks.run("model-auto-profile", auto_profile)

    from parity import float_parity, int8_parity

    x = np.load(work / manifest["models"]["fewshot"]["inputs"], allow_pickle=False)

    def fewshot_f32() -> dict:
        spec = manifest["models"]["fewshot"]
        host = _load(work, spec["host"])
        out = load("fewshot").run(x, spikes=True)
        r = float_parity(host, out, spec["tolerance"]["output_atol"])
        if not r["passed"]:
            r["reason"] = (f"max |arm − host| {r['output_max_abs']:.3g} (tol {r['atol']:g}), "
                           f"{r['spike_mismatches'] - r['spike_mismatches_at_ties']} spike flips off ties")
        return r

    checks.run("fewshot-float32", fewshot_f32)

    def fewshot_int8() -> dict:
        from qdq import expected_arithmetic

        spec = manifest["models"]["fewshot-int8"]
        host8, host32 = _load(work, spec["host"]), _load(work, spec["host_float32"])
        m = load("fewshot-int8")
        out = m.run(x, spikes=True)
        isa = list(detect().cpu.isa)
        arithmetic = expected_arithmetic(platform.machine(), isa)
        ref = _load(work, spec["references"][arithmetic])
        r = int8_parity(out, host32, ref, ref["bound"], x, spec["tolerance"], arithmetic, host_int8=host8)
        r["precision"] = m.precision
        r["kernel"] = {"machine": platform.machine(), "isa": isa, "arithmetic": arithmetic,
                       "host": spec["host_kernel"]}
        if m.precision != "int8":
            r["passed"], r["failures"] = False, r["failures"] + [f"precision {m.precision!r}, expected 'int8'"]
        r["reason"] = "; ".join(r["failures"])
        return r

    checks.run("fewshot-int8", fewshot_int8)

    def stateful() -> dict:
        spec = manifest["models"]["stateful"]
        host = _load(work, spec["host"])
        xs = np.load(work / spec["inputs"], allow_pickle=False)
        m = load("stateful")
        stream = m.stream()
        per_step = []
        for t, xt in enumerate(xs):
            o = stream.step(xt, spikes=True)
            arm = {f"t{t}_output": o["output"], **{f"t{t}_spikes_{i}": o[f"spikes_{i}"] for i in range(len(m.sizes))}}
            per_step.append(float_parity(host, arm, spec["tolerance"]["output_atol"], prefix=f"t{t}_"))
        failing = [t for t, r in enumerate(per_step) if not r["passed"]]
        return {"passed": not failing and len(per_step) == spec["steps"], "steps": len(per_step),
                "output_max_abs": max(r["output_max_abs"] for r in per_step),
                "spike_mismatches": sum(r["spike_mismatches"] for r in per_step),
                "spike_mismatches_at_ties": sum(r["spike_mismatches_at_ties"] for r in per_step),
                "bit_exact": all(r["bit_exact"] for r in per_step), "atol": spec["tolerance"]["output_atol"],
                "reason": f"steps {failing} out of tolerance" if failing else ""}

    checks.run("stateful-stream", stateful)

    def devices_cli() -> dict:
        p = _console_script("zor-devices", ["detect", "--json"])
        if p.returncode != 0:
            return {"passed": False, "reason": f"exit {p.returncode}: {p.stderr.strip()[-300:]}"}
        d = json.loads(p.stdout)
        ok = d["profile"] == expect
        return {"passed": ok, "profile": d["profile"], "detail": d["reason"],
                "reason": "" if ok else f"zor-devices detect said {d['profile']}, expected {expect}"}

    checks.run("zor-devices-cli", devices_cli)

    def bench_cli() -> dict:
        out = work / "out" / f"bench-{core}.json"
        args = [str(work / manifest["models"]["fewshot"]["file"]), str(work / manifest["models"]["fewshot-int8"]["file"]),
                "--device", "auto", "--threads", "1", "--batch", "8", "--calls", "5", "--repeats", "1", "--no-rss",
                "--input", str(work / manifest["models"]["fewshot"]["inputs"]), "--json", str(out)]
        p = _console_script("zor-bench", args)
        if p.returncode != 0:
            return {"passed": False, "reason": f"exit {p.returncode}: {p.stderr.strip()[-300:]}"}
        data = json.loads(out.read_text())
        return {"passed": True, "timings_are": EMULATED, "table": p.stdout, "report": data}

    checks.run("zor-bench-cli", bench_cli)

    report["checks"] = checks.results
    report["passed"] = all(c["passed"] for c in checks.results)
    report["seconds_emulated"] = time.perf_counter() - t_start
    report["timings_are"] = EMULATED
    return report


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--core", required=True, help="The emulated core, as in QEMU_CPU (e.g. cortex-a72).")
@click.option("--expect", required=True, help="The profile detection must pick (e.g. rpi4).")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=HERE,
              show_default="this script's folder", help="The folder prepare.py wrote.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the JSON report.")
def main(core: str, expect: str, work: Path, out: Path) -> None:
    """Zor ARM check (runs inside the emulated root)."""
    print(f"== {core} (expect {expect}) ==", flush=True)
    report = run_checks(core, expect, work)
    from zor.common.fileio import write_text_atomic

    write_text_atomic(out, json.dumps(report, indent=2, default=str))
    print(f"{core}: {'all checks passed' if report['passed'] else 'FAILED'} "
          f"({report['seconds_emulated']:.1f} s emulated)", flush=True)
    if not report["passed"]:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
