"""Host side of the ARM check: export the models, fix their inputs, record the x86-64 outputs.

Run on the x86-64 host with the training extras (torch, onnx) installed; it writes
into OUT (a folder) everything the emulated check (``check.py``) needs:

    fewshot.onnx        the seed's few-shot autoencoder 784-128-784 (sigmoid output),
                        trained 30 steps on one bundled image per class, float32 export
    fewshot-int8.onnx   the same network, int8 with the Raspberry Pi recipe (profile
                        ``rpi4``: QDQ s8/s8 per-channel, full range; rpi3/rpi5 share it)
    stateful.onnx       a stateful 32-24-8 network (decay, refractory, min_charge)
    *.in.npy            fixed inputs: 32 bundled test images; 6 steps × 4 rows for the stream
    *.host.npz          onnxruntime outputs on this host: ``output`` and ``spikes_{i}``
                        (per step ``t{t}_output`` / ``t{t}_spikes_{i}`` for the stream)
    fewshot-int8.{int32,int16_pairs}.npz
                        the int8 graph computed in numpy with each int8 kernel's sums
                        (qdq.py): output, spikes, charges, and ``bound``, the per-value
                        bound on |int8 − float32| its scales imply
    manifest.json       models, files, tolerances (float32 1e-5; int8: the export's own
                        spike budget and metric drop budget, the arithmetic references),
                        the host's int8 kernel (ISA, the sums it implies and reproduces),
                        host versions

The exports go through the real exporter (:func:`zor.export.export`, verified against
the torch engine); host outputs come from :class:`zor.runtime.Model` with the Pi
profile's session settings and one thread, as the emulated run uses.

Example:
    python benchmarks/arm/prepare.py OUT
"""

from __future__ import annotations

import io
import json
import platform
import sys
from pathlib import Path

import click
import numpy as np

__all__ = ["prepare", "thresholds", "F32_TOL", "PI_PROFILE"]

sys.path.insert(0, str(Path(__file__).resolve().parent))    # parity.py, shared with check.py

F32_TOL = 1e-5            # float32: the same ops on another ISA, another summation order
PI_PROFILE = "rpi4"       # the int8 recipe of every Pi profile (rpi3, rpi4, rpi5 share it)
STREAM_STEPS, STREAM_BATCH = 6, 4


def _npy(path: Path, arr: np.ndarray) -> None:
    from zor.common.fileio import write_bytes_atomic

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    write_bytes_atomic(path, buf.getvalue())


def _npz(path: Path, arrays: dict) -> None:
    from zor.common.fileio import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes_atomic(path, buf.getvalue())


def _fewshot_net():
    from zor.engine.presets import seed_autoencoder
    from zor.tasks.datasets import few_shot, load_bundled

    x, y = load_bundled("train")
    net = seed_autoencoder(seed=0, device="cpu")
    net.fit(x[few_shot(y, 1)], steps=30, batch_size=10, progress=False)
    return net, x


def _stateful_net():
    from zor import Layer, Zor

    return Zor([Layer(32, decay=0.5),
                Layer(24, activation_function="relu", decay=0.3, refractory=0.1, min_charge=0.02),
                Layer(8, activation_function="sigmoid", decay=0.8)], seed=3, device="cpu")


def thresholds(path: Path) -> dict:
    """``threshold_{i}`` initializers of an export (for the tie excuse of the spike comparison)."""
    import onnx
    from onnx import numpy_helper

    from zor.common import format as fmt

    proto = onnx.load(str(path))
    names = {init.name: init for init in proto.graph.initializer}
    out, i = {}, 0
    while fmt.threshold(i) in names:
        out[fmt.threshold(i)] = numpy_helper.to_array(names[fmt.threshold(i)]).astype(np.float32)
        i += 1
    return out


def _host_outputs(model, x: np.ndarray, prefix: str = "") -> dict:
    """``output``, ``spikes_{i}`` and ``charge_{i}`` of one ``Model.run`` (keys prefixed)."""
    n = len(model.sizes)
    out = model.run(x, spikes=True, outputs=[f"charge_{i}" for i in range(n)])
    keep = {prefix + "output": out["output"]}
    keep.update({f"{prefix}spikes_{i}": out[f"spikes_{i}"] for i in range(n)})
    keep.update({f"{prefix}charge_{i}": out[f"charge_{i}"] for i in range(n)})
    return keep


def _int8_references(out: Path, x: np.ndarray, host32: dict, host8: dict,
                     tol8: dict) -> tuple[dict, dict, dict]:
    """Per arithmetic, the numpy reference and bound of the int8 export (``fewshot-int8.{a}.npz``);
    the host's int8 run checked against its own kernel's. Raises VerificationError if it misses."""
    from hostcheck import host_kernel
    from parity import int8_parity
    from qdq import ARITHMETICS, envelope, read_params, simulate

    from zor.common.errors import VerificationError

    params = read_params(out / "fewshot-int8.onnx")
    refs, files = {}, {}
    for a in ARITHMETICS:
        refs[a] = {**simulate(params, x, a), "bound": envelope(params, host32, a).astype(np.float32)}
        files[a] = f"fewshot-int8.{a}.npz"
        _npz(out / files[a], refs[a])
    kernel = host_kernel(host8, refs, tol8["arithmetic_atol"])
    a = kernel["expected_arithmetic"]
    r = int8_parity(host8, host32, refs[a], refs[a]["bound"], x, tol8, a)
    if not r["passed"]:
        raise VerificationError(f"the host's own int8 run ({kernel['machine']}, ISA {', '.join(kernel['isa'])}: "
                                f"{a} sums expected; it reproduces {kernel['reproduces'] or 'no reference'}) "
                                f"misses on the fixed inputs: {'; '.join(r['failures'])}")
    return files, kernel, r


def prepare(out: Path) -> dict:
    """Export the three models into ``out`` and record inputs, host outputs and the manifest."""
    import onnx
    import onnxruntime
    import torch
    from zor.export import export
    from zor.export.calibration import metric_kind
    from zor.runtime import Model

    from zor.common.errors import VerificationError
    from zor.common.fileio import write_text_atomic
    from zor.tasks.datasets import load_bundled

    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    net, x_train = _fewshot_net()
    x_test = load_bundled("test")[0][:32].astype(np.float32)
    f32 = export(net, out / "fewshot.onnx", threads=1)
    i8 = export(net, out / "fewshot-int8.onnx", quantize="int8", calibration=x_train[:64], device=PI_PROFILE,
                threads=1)
    sf_net = _stateful_net()
    sf = export(sf_net, out / "stateful.onnx", threads=1)
    _npy(out / "fewshot.in.npy", x_test)
    xs = np.random.default_rng(4).random((STREAM_STEPS, STREAM_BATCH, 32), dtype=np.float32) * 1.5
    _npy(out / "stateful.in.npy", xs)

    m32 = Model(out / "fewshot.onnx", device=PI_PROFILE, threads=1)
    m8 = Model(out / "fewshot-int8.onnx", device=PI_PROFILE, threads=1)
    host32 = {**_host_outputs(m32, x_test), **thresholds(out / "fewshot.onnx")}
    host8 = {**_host_outputs(m8, x_test), **thresholds(out / "fewshot-int8.onnx")}
    _npz(out / "fewshot.host.npz", host32)
    _npz(out / "fewshot-int8.host.npz", host8)
    # The stream: a fresh Stream over the steps; Model.run from the carried state gives the
    # charges too (one step of run(x, state) is what Stream.step does).
    ms = Model(out / "stateful.onnx", device=PI_PROFILE, threads=1)
    stream = ms.stream()
    steps = thresholds(out / "stateful.onnx")
    for t, x in enumerate(xs):
        state = stream.state
        steps.update(_host_outputs(ms, {"input": x, **state} if state else x, prefix=f"t{t}_"))
        o = stream.step(x, spikes=True)
        if not np.array_equal(o["output"], steps[f"t{t}_output"]):
            raise VerificationError(f"stateful.onnx step {t}: Stream.step and Model.run from the carried state "
                                    "disagree on the host")
    _npz(out / "stateful.host.npz", steps)

    q = i8.quantization
    kind, reference = metric_kind(m32.metadata.task, m32.sizes[0], m32.sizes[-1], None)
    tol8 = {"spike_budget": float(q["spike_budget"]), "max_drop": float(q["max_drop"]), "metric": kind,
            "reference": reference, "arithmetic_atol": F32_TOL,
            "output_bound": "per value, from the scales (qdq.envelope); file references[arithmetic]['bound']"}
    references, kernel, host_int8 = _int8_references(out, x_test, host32, host8, tol8)
    manifest = {
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "numpy": np.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
                 "torch": torch.__version__},
        "models": {
            "fewshot": {"file": "fewshot.onnx", "inputs": "fewshot.in.npy", "host": "fewshot.host.npz",
                        "precision": "float32", "sizes": m32.sizes, "bytes": f32.bytes,
                        "tolerance": {"output_atol": F32_TOL, "spikes": "identical, except where the host charge "
                                      "lies within output_atol of the threshold"}},
            "fewshot-int8": {"file": "fewshot-int8.onnx", "inputs": "fewshot.in.npy", "host": "fewshot-int8.host.npz",
                             "host_float32": "fewshot.host.npz", "precision": "int8", "sizes": m8.sizes,
                             "bytes": i8.bytes, "recipe": q.get("recipe"), "profile": q.get("profile"),
                             # the export's own budgets; the bound its quantisation implies
                             "tolerance": tol8, "references": references, "host_kernel": kernel,
                             "host_int8_vs_host_float32": {k: host_int8[k] for k in (
                                 "output_max_abs_vs_reference", "output_max_abs_vs_host_float32",
                                 "output_share_of_bound", "spike_agreement_vs_host_float32", "metric_float32",
                                 "metric_int8", "metric_drop")}},
            "stateful": {"file": "stateful.onnx", "inputs": "stateful.in.npy", "host": "stateful.host.npz",
                         "precision": "float32", "sizes": ms.sizes, "bytes": sf.bytes, "steps": STREAM_STEPS,
                         "tolerance": {"output_atol": F32_TOL}},
        },
    }
    write_text_atomic(out / "manifest.json", json.dumps(manifest, indent=2))
    return manifest


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
def main(out: Path) -> None:
    """Host side of the ARM check: export the models, fix their inputs, record the x86-64 outputs.

    OUT: the folder to write the models, inputs, host outputs and manifest into.
    """
    from zor.common.errors import ZorError

    try:
        m = prepare(out)
    except ZorError as exc:
        click.echo(f"prepare: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    click.echo(f"prepared {', '.join(m['models'])} in {out}")


if __name__ == "__main__":
    main()
