"""An int8 run on this machine's own int8 kernel, checked as the emulated Pi runs are.

Reads the folder ``prepare.py`` wrote, runs ``fewshot-int8.onnx`` with
:class:`zor.runtime.Model` (profile rpi4, one thread) and checks it with
:func:`parity.int8_parity` against the numpy reference of the kernel's arithmetic
(``qdq.py``), the float32 run with the quantisation bound, and the export's budgets.
Torch-free (numpy, onnxruntime, zor.runtime), so it also runs under
``qemu-x86_64-static -cpu Haswell`` (AVX2 without VNNI: onnxruntime's u8×s8
int16-pair kernel) or ``-cpu SandyBridge`` (no AVX2: its SSE4.1 kernel), where
/proc/cpuinfo still shows the host's CPU: pass ``--arithmetic`` there.

Prints one line per check and, with ``--json``, the figures; exit 0 when it passed,
1 otherwise.

Example:
    python benchmarks/arm/hostcheck.py WORK
    qemu-x86_64-static -cpu Haswell .venv/bin/python benchmarks/arm/hostcheck.py WORK --arithmetic int16_pairs
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))    # parity.py, qdq.py

__all__ = ["load_npz", "host_kernel", "check_int8", "main"]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz file."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def host_kernel(run: Mapping[str, np.ndarray], refs: Mapping[str, Mapping[str, np.ndarray]],
                atol: float) -> dict[str, Any]:
    """This CPU (machine, ISA from zor.devices.detect()), the arithmetic its ISA implies, and
    which of the reference arithmetics the int8 ``run`` reproduces within ``atol``."""
    from parity import float_parity
    from qdq import expected_arithmetic
    from zor.devices import detect

    isa = list(detect().cpu.isa)
    return {"machine": platform.machine(), "isa": isa,
            "expected_arithmetic": expected_arithmetic(platform.machine(), isa),
            "reproduces": [a for a, ref in refs.items() if float_parity(ref, run, atol)["passed"]]}


def check_int8(work: Path, arithmetic: Optional[str] = None) -> dict[str, Any]:
    """Run the int8 export here; the int8_parity figures plus ``kernel`` (see host_kernel)."""
    from parity import int8_parity
    from zor.runtime import Model

    manifest = json.loads((work / "manifest.json").read_text())
    spec = manifest["models"]["fewshot-int8"]
    x = np.load(work / spec["inputs"], allow_pickle=False)
    host32, host8 = load_npz(work / spec["host_float32"]), load_npz(work / spec["host"])
    refs = {a: load_npz(work / f) for a, f in spec["references"].items()}
    out = Model(work / spec["file"], device=spec["profile"], threads=1).run(x, spikes=True)
    kernel = host_kernel(out, refs, spec["tolerance"]["arithmetic_atol"])
    kernel["arithmetic"] = arithmetic or kernel["expected_arithmetic"]
    ref = refs[kernel["arithmetic"]]
    r = int8_parity(out, host32, ref, ref["bound"], x, spec["tolerance"], kernel["arithmetic"], host_int8=host8)
    r["kernel"] = kernel
    return r


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("work", type=click.Path(file_okay=False, path_type=Path))
@click.option("--arithmetic", type=click.Choice(("int32", "int16_pairs")), default=None,
              help="The kernel's sum (default: what this CPU's ISA implies, see qdq.py).")
@click.option("--qemu-cpu", default=None, help="The qemu CPU model this runs under (recorded; the ISA flags "
              "zor.devices.detect() reads are then the host's).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the figures here.")
def main(work: Path, arithmetic: Optional[str], qemu_cpu: Optional[str], json_path: Optional[Path]) -> None:
    """An int8 run on this machine's own int8 kernel, checked as the emulated Pi runs are.

    WORK: the folder prepare.py wrote.
    """
    r = check_int8(work, arithmetic)
    k = r["kernel"]
    k["qemu_cpu"] = qemu_cpu
    cpu = (f"qemu-x86_64 -cpu {qemu_cpu} (ISA flags read: the host's)" if qemu_cpu
           else f"{k['machine']} ({', '.join(k['isa']) or 'no ISA flags'})")
    print(f"int8 kernel: {cpu}, checked as {k['arithmetic']}, "
          f"reproduces {', '.join(k['reproduces']) or 'no reference arithmetic'}")
    print(f"  vs reference max |Δ| {r['output_max_abs_vs_reference']:.3g}; vs float32 max |Δ| "
          f"{r['output_max_abs_vs_host_float32']:.3g} ({100 * r['output_share_of_bound']:.0f} % of the bound at most); "
          f"spike agreement {', '.join(f'{100 * a:.2f} %' for a in r['spike_agreement_vs_host_float32'])}; "
          f"metric drop {r['metric_drop']:.4f}")
    print("  passed" if r["passed"] else "  FAILED: " + "; ".join(r["failures"]))
    if json_path is not None:
        json_path.write_text(json.dumps(r, indent=2, default=str))
    if not r["passed"]:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
