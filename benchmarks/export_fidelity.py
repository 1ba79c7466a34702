"""Export fidelity: does the ONNX file compute what the torch engine computes?

Two models, both the seed's shape, trained on the 10 few-shot Fashion-MNIST images
(the first image of each class, ``few_shot(labels, 1)``):

- ``fewshot``  ``Zor([Layer(784), Layer(64), Layer(784)])``, 500 training steps
- ``stateful`` ``Layer(784, decay=0.5), Layer(64, decay=0.8, refractory=0.1,
  min_charge=0.0), Layer(784)``, 200 training steps

Each is exported with ``zor.export.export`` as float32, int8 (the ``generic`` device
profile's recipe, calibrated on the bundled 200 training images) and fp16, and then
measured against the torch engine on unseen test images:

- float32 / fp16: max |Δ output| and spike agreement per layer (ties, i.e. flips
  within 1e-5 of θ, counted apart) — the fewshot model on the test images (half of
  each batch random inputs), the stateful one over 100 steps from rest and from a
  random state;
- int8 / fp16: spike agreement per layer (every flip counts), the seed's metric
  100·(1 − MAE) against the input and PSNR, float engine vs file, and the drop; the
  stateful model on 64 streams × 100 steps, a new test image every step;
- file size, and the size as a share of the float32 file;
- export + verify wall time (median of ``--repeats``), and as a ratio to a checkpoint
  save + load measured in the same run (shared machines: absolute seconds are noisy).

Targets (issue 3): float32 max |Δ| ≤ 1e-5 and 100 % agreement (ties excepted);
int8 agreement ≥ 99 % per layer, metric drop ≤ 0.5 points, file ≤ 30 % of float32.

Usage (from the repository root):
    python -m benchmarks.export_fidelity --json benchmarks/results/export_fidelity.json
    python -m benchmarks.export_fidelity --quick            # smoke test, a few seconds
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from benchmarks import common

TARGETS = {"max_abs_diff": 1e-5, "int8_agreement": 0.99, "int8_drop": 0.5, "int8_size_ratio": 0.30}
TASK = {
    "name": "reconstruct",
    "input": {"range": [0.0, 1.0], "preprocessing": "28x28 grayscale, row-major, pixel / 255",
              "image": {"height": 28, "width": 28, "channels": 1}},
    "output": {"range": None, "meaning": "the reconstructed image, same layout as the input"},
    "data": {"name": "fashion-mnist"},      # the exporter calibrates int8 on the data the task records
}


def train(kind: str, x: np.ndarray, steps: int):
    from zor import Layer, Zor

    if kind == "fewshot":
        layers = [Layer(784), Layer(64), Layer(784)]
    else:
        layers = [Layer(784, decay=0.5), Layer(64, decay=0.8, refractory=0.1, min_charge=0.0), Layer(784)]
    net = Zor(layers, seed=0, device="cpu", task=TASK)
    net.fit(x, steps=steps, progress=False)
    return net


def extended_float_check(net, proto, test_x: np.ndarray, steps: int, mode: str) -> dict[str, Any]:
    """Parity on more data than the export's own check (tolerances as in zor.export.verify)."""
    from zor.export import verify

    if net.stateful:
        return verify(net, proto, data=test_x, batch=64, steps=steps, mode=mode, raise_on_failure=False)
    return verify(net, proto, data=test_x, batch=2 * min(len(test_x), 1000), steps=1, mode=mode,
                  raise_on_failure=False)


def quality(net, proto, test_x: np.ndarray, steps: int, seed: int = 0) -> dict[str, Any]:
    """Spike agreement (every flip counts) and seed metric / PSNR of engine vs file on test images."""
    from zor.export.verify import compare_runs

    from zor.common import metrics

    if net.stateful:
        rng = np.random.default_rng(seed)
        xs = test_x[rng.integers(0, len(test_x), size=(steps, 64))]          # (T, 64, 784): a new image each step
    else:
        xs = test_x[None]
    comp = compare_runs(net, proto, [("test", xs, None)], excuse_ties=False, collect=True)
    ref, got = np.concatenate(comp.reference), np.concatenate(comp.candidate)
    target = xs.reshape(-1, xs.shape[-1])
    before, after = metrics.reconstruction(ref, target), metrics.reconstruction(got, target)
    layers = comp.layer_report()
    return {
        "agreement": [row["spike_agreement"] for row in layers],
        "min_agreement_hidden": min(row["spike_agreement"] for row in layers[1:]),
        "max_abs_diff": comp.outputs["output"].max,
        "metric_float": before["accuracy"], "metric_file": after["accuracy"],
        "drop": before["accuracy"] - after["accuracy"],
        "psnr_float": before["psnr"], "psnr_file": after["psnr"], "psnr_drop": before["psnr"] - after["psnr"],
        "rows": int(xs.shape[1]), "steps": int(xs.shape[0]),
    }


def bench_model(kind: str, data: dict, steps_train: int, steps_verify: int, repeats: int, tmp: Path,
                test_rows: int) -> list[dict[str, Any]]:
    import onnx
    from zor.export import export

    from zor import Zor
    from zor.tasks.datasets import few_shot

    x_train, y_train = data["train"]
    test_x = data["test"][0][:test_rows]
    net = train(kind, x_train[few_shot(y_train, 1)], steps_train)
    ckpt = tmp / f"{kind}.zor"
    net.save(ckpt)
    reference = common.time_runs(lambda: Zor.load(ckpt, device="cpu").save(tmp / "roundtrip.zor"),
                                 repeats=repeats, warmup=1)
    rows = []
    float_bytes = None
    for mode in ("none", "int8", "fp16"):
        out = tmp / f"{kind}-{mode}.onnx"
        results: list = []

        def run_export() -> None:
            results.append(export(ckpt, out, quantize=mode, steps=steps_verify if net.stateful else None))

        timing = common.time_runs(run_export, repeats=repeats, warmup=0)
        res = results[-1]
        proto = onnx.load(str(out))
        float_bytes = res.bytes if mode == "none" else float_bytes
        row: dict[str, Any] = {
            "model": kind, "mode": {"none": "float32"}.get(mode, mode), "bytes": res.bytes,
            "size_ratio": res.bytes / float_bytes,
            "export_verify_s": timing["median"], "export_runs_s": timing["runs"],
            "vs_checkpoint_roundtrip": timing["median"] / reference["median"],
            "checkpoint_roundtrip_s": reference["median"], "timings": res.timings,
            "export_verification": res.verification, "quantization": res.quantization,
        }
        if mode in ("none", "fp16"):
            ref_net = net
            if mode == "fp16":
                from zor.export.fp16 import rounded_model

                ref_net = rounded_model(net)
            check = extended_float_check(ref_net, proto, test_x, steps_verify, mode)
            row.update(parity=check, parity_passed=check["passed"],
                       parity_max_abs_diff=check["outputs"]["output"]["max_abs_diff"],
                       parity_agreement=min(r["spike_agreement"] for r in check["layers"]),
                       parity_ties=sum(r["ties"] for r in check["layers"]),
                       parity_rows=check["batch"], parity_steps=check["steps"])
        if mode in ("int8", "fp16"):
            q = quality(net, proto, test_x, steps_verify)
            row.update(q, fallback=res.quantization.get("fallback", []))
        rows.append(row)
    return rows


def verdicts(rows: list[dict[str, Any]]) -> dict[str, bool]:
    out = {}
    for r in rows:
        key = f"{r['model']}/{r['mode']}"
        if r["mode"] == "float32":
            out[key] = bool(r["parity_passed"] and r["parity_max_abs_diff"] <= TARGETS["max_abs_diff"]
                            and r["parity_agreement"] == 1.0)
        elif r["mode"] == "int8":
            out[key] = bool(r["min_agreement_hidden"] >= TARGETS["int8_agreement"] and r["drop"] <= TARGETS["int8_drop"]
                            and r["size_ratio"] <= TARGETS["int8_size_ratio"])
        else:
            out[key] = bool(r["parity_passed"])
    return out


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
@click.option("--quick", is_flag=True, help="Smoke test: short training, 20 verified steps, 1 timing run.")
@click.option("--bundled", is_flag=True, help="Use the bundled 700-image subset even when the full set is here.")
@click.option("--repeats", type=click.IntRange(1, 20), default=None, help="Timed export runs per mode (median) [3].")
@click.option("--threads", type=click.IntRange(1, 64), default=1, show_default=True)
def main(json_path: Optional[str], quick: bool, bundled: bool, repeats: Optional[int], threads: int) -> None:
    """Export fidelity of float32 / int8 / fp16 files against the torch engine."""
    common.set_threads(threads)
    data = common.load_images(bundled=bundled)
    steps_train = {"fewshot": 50 if quick else 500, "stateful": 30 if quick else 200}
    steps_verify = 20 if quick else 100
    repeats = repeats or (1 if quick else 3)
    test_rows = 500 if quick else 10_000
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zor-export-bench-") as tmp:
        for kind in ("fewshot", "stateful"):
            rows += bench_model(kind, data, steps_train[kind], steps_verify, repeats, Path(tmp), test_rows)
    table = []
    for r in rows:
        table.append({
            "model": r["model"], "mode": r["mode"], "bytes": r["bytes"], "size": f"{100 * r['size_ratio']:.1f}%",
            "max_diff": f"{r['parity_max_abs_diff']:.2e}" if "parity_max_abs_diff" in r else "-",
            "agree": (f"{100 * r['parity_agreement']:.3f}% ({r['parity_ties']} ties)" if r["mode"] != "int8"
                      else "-"),
            "agree_q": (", ".join(f"{100 * a:.2f}%" for a in r["agreement"][1:]) if "agreement" in r else "-"),
            "metric": (f"{r['metric_float']:.2f}→{r['metric_file']:.2f}" if "metric_float" in r else "-"),
            "drop": f"{r['drop']:.4f}" if "drop" in r else "-",
            "psnr_drop": f"{r['psnr_drop']:.4f}" if "psnr_drop" in r else "-",
            "time": f"{r['export_verify_s']:.2f}", "ratio": f"{r['vs_checkpoint_roundtrip']:.1f}x",
        })
    cols = ["model", "mode", "bytes", "size", "max_diff", "agree", "agree_q", "metric", "drop", "psnr_drop", "time",
            "ratio"]
    heads = ["model", "mode", "file B", "vs fp32", "max|Δout|", "parity agreement", "agreement L1, L2",
             "seed metric", "drop", "PSNR drop", "export+verify s", "vs ckpt save+load"]
    print(common.format_table(table, cols, heads))
    ok = verdicts(rows)
    print("\ntargets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in ok.items()))
    print(f"data: {data['source']}; test rows {test_rows} (stateful: 64 streams x {steps_verify} steps); "
          f"total {time.perf_counter() - start:.1f} s")
    if json_path:
        common.write_json(json_path, {"benchmark": "export_fidelity", "quick": quick, "data": data["source"],
                                      "targets": TARGETS, "verdicts": ok, "rows": rows,
                                      "environment": common.environment(threads)})
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
