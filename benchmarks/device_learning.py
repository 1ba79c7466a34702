"""Learning on the device: the runtime's Learner (onnxruntime alone) against the torch engine, one thread.

Measured (torch.set_num_threads(1), onnxruntime intra-op 1):

1. **Quick start on the runtime**: ``Zor([Layer(784), Layer(64), Layer(784)])``, exported
   ``--learnable`` untrained, learns 10 Fashion-MNIST training images (a balanced subset)
   on the runtime alone: 500 steps of batches of 48 drawn uniformly from the 10 images,
   the same batches for the engine; the seed's metric 100·(1 − MAE) on 1,000 unseen test
   images, and the wall time of the 500 steps, median of 3 interleaved rounds, each from the
   same start (target: runtime ≥ 83 %, time ≤ the engine's).
2. **Step time** at batch 48 for 784-64-784 and 784-256-10: runtime step / engine step,
   the median of per-round ratios (rounds interleaved; benchmarks.common.paired_ratio), target ≤ 1.0.
   Two workloads: one batch repeated (the issue's figure; the hidden units that never spike on it
   fall silent, and the engine then computes co-activity only for the active ones) and 50 random
   batches cycled; ``hidden_active`` is the share of hidden units that spiked for some row at the end.
3. **Peak RSS** of a process that never imports torch, loading the learnable file and
   learning 500 steps (VmHWM; target < 120 MB).
4. **The 10th class** (examples/learn_new_class.py's setting): the runtime's adaptation,
   the engine's on the same batches, and a closed-form ridge read-out refit in numpy
   (W_out = (HᵀH + λI)⁻¹(HᵀY + λW_out_old) on the device images' hidden activations).
5. **The masked co-activity by activity** (zor.export.learnable_masked): 784-256-10 with K of
   the 256 hidden units spiking for every row and the others for none (θ_1 = ∓1e9), the
   runtime step of the masked file against the file exported with ``masked=False``, one
   repeated batch; ratio masked / full (< 1: the masked form is faster).

Usage:
    python -m benchmarks.device_learning --json out.json [--rounds 7] [--quick] [--only steps|masked]

``--only steps`` measures the step-time rows (2.) alone, ``--only masked`` the rows of 5.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from benchmarks.common import (
    balanced_subset,
    command,
    environment,
    format_table,
    interleave,
    load_images,
    paired_ratio,
    set_threads,
    write_json,
)

_RSS = textwrap.dedent("""
    import sys, json, numpy as np
    from zor.runtime import Learner
    lr = Learner(sys.argv[1], threads=1)
    x = np.load(sys.argv[2])
    lr.fit(x, x, steps=500, batch_size=48, progress=False)
    hwm = [int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0] / 1024
    print(json.dumps({"peak_rss_mb": hwm, "torch": "torch" in sys.modules}))
""")


def _metric(out: np.ndarray, x: np.ndarray) -> float:
    return 100.0 * (1.0 - float(np.abs(out - x).mean()))


def quick_start(folder: Path, data: dict, seed: int, rounds: int) -> dict[str, Any]:
    from zor.export import export_learnable
    from zor.runtime import Learner

    from zor import Layer, Zor
    x, y = data["train"]
    few = x[balanced_subset(y, 10, seed)]
    test = data["test"][0][:1000]
    make = lambda: Zor([Layer(784), Layer(64), Layer(784)], seed=seed)  # noqa: E731
    export_learnable(make(), folder / "qs.onnx")
    rng = np.random.default_rng(seed)
    batches = [few[rng.integers(0, 10, 48)] for _ in range(500)]
    last: dict[str, Any] = {}

    def run(kind: str) -> float:
        """500 steps from the same start (a fresh learner or network each round); the wall seconds."""
        model = Learner(folder / "qs.onnx", threads=1) if kind == "runtime" else make()
        step = model.step if kind == "runtime" else model.train_batch
        t0 = time.perf_counter()
        for b in batches:
            step(b, b)
        last[kind] = model
        return time.perf_counter() - t0
    r = interleave({"engine": lambda: run("engine"), "runtime": lambda: run("runtime")}, rounds)
    return {"runtime_metric": _metric(last["runtime"].predict(test), test),
            "engine_metric": _metric(last["engine"].forward(test, train=False).numpy(), test),
            "runtime_s": float(np.median(r["runtime"])), "engine_s": float(np.median(r["engine"])),
            "wall_ratio": paired_ratio(r["runtime"], r["engine"]), "rounds": rounds, "few": few}


def step_ratio(folder: Path, sizes: list, rounds: int, pool: int = 1, steps: int = 20) -> dict[str, Any]:
    """Runtime step / engine step at batch 48, both learning the same batches: ``pool`` = 1 repeats one
    batch (the figure of issue 25), more cycles that many random batches."""
    from zor.export import export_learnable
    from zor.runtime import Learner

    from zor import Layer, Zor
    layers = lambda: [Layer(sizes[0]), Layer(sizes[1]), Layer(sizes[2])]  # noqa: E731
    name = "x".join(map(str, sizes))
    if not (folder / f"{name}.onnx").exists():
        export_learnable(Zor(layers(), seed=0), folder / f"{name}.onnx", batches=10)
    learner, engine = Learner(folder / f"{name}.onnx", threads=1), Zor(layers(), seed=0)
    rng = np.random.default_rng(0)
    xs = rng.random((pool, 48, sizes[0]), dtype=np.float32)
    ts = rng.random((pool, 48, sizes[2]), dtype=np.float32)

    def timed(fn):
        k = [0]

        def go() -> float:
            t0 = time.perf_counter()
            for _ in range(steps):
                j = k[0] % pool
                fn(xs[j], ts[j])
                k[0] += 1
            return (time.perf_counter() - t0) / steps
        return go
    timed(learner.step)(), timed(engine.train_batch)()          # warm-up
    r = interleave({"engine": timed(engine.train_batch), "runtime": timed(learner.step)}, rounds)
    _, traces = engine.run(xs[0])
    active = float((traces[1].s.numpy().max(axis=0) > 0).mean())    # hidden units that spiked for some row
    return {"network": name, "batches": "one repeated" if pool == 1 else f"{pool} cycled",
            "engine_ms": 1e3 * float(np.median(r["engine"])), "runtime_ms": 1e3 * float(np.median(r["runtime"])),
            "ratio": paired_ratio(r["runtime"], r["engine"]),     # runtime / engine: < 1 is faster
            "hidden_active": active}


def masked_cost(folder: Path, rounds: int, shares: tuple = (0.18, 0.27, 0.5, 0.75, 1.0),
                steps: int = 20) -> list[dict[str, Any]]:
    """Runtime step of 784-256-10 with the masked co-activity against the full form, K = share · 256 hidden units
    spiking for every row and the rest for none (θ_1 = −1e9 / 1e9), one repeated batch of 48."""
    import torch
    from zor.export import export_learnable
    from zor.runtime import Learner

    from zor import Layer, Zor
    rng = np.random.default_rng(0)
    x, t = rng.random((48, 784), dtype=np.float32), rng.random((48, 10), dtype=np.float32)
    rows = []
    for share in shares:
        net, k = Zor([Layer(784), Layer(256), Layer(10)], seed=0), int(round(share * 256))
        with torch.no_grad():
            net.threshold(1)[:k], net.threshold(1)[k:] = -1e9, 1e9
        learners = {}
        for form in ("masked", "full"):
            export_learnable(net, folder / f"share-{form}.onnx", batches=2, masked=form == "masked")
            learners[form] = Learner(folder / f"share-{form}.onnx", threads=1)

        def timed(lr):
            def go() -> float:
                t0 = time.perf_counter()
                for _ in range(steps):
                    lr.step(x, t)
                return (time.perf_counter() - t0) / steps
            return go
        for lr in learners.values():
            timed(lr)()                                            # warm-up
        r = interleave({form: timed(lr) for form, lr in learners.items()}, rounds)
        rows.append({"hidden_active": k / 256, "masked_ms": 1e3 * float(np.median(r["masked"])),
                     "full_ms": 1e3 * float(np.median(r["full"])), "ratio": paired_ratio(r["masked"], r["full"])})
    return rows


def peak_rss(folder: Path, few: np.ndarray) -> dict[str, Any]:
    np.save(folder / "few.npy", few)
    r = subprocess.run([sys.executable, "-c", _RSS, str(folder / "qs.onnx"), str(folder / "few.npy")],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def _hidden(state: dict, x: np.ndarray) -> np.ndarray:
    """a_1 = f(c ⊙ [c > θ_1]) for the examples' classifier (hidden activation identity)."""
    c = x @ state["weight_0"]
    return c * (c > state["threshold_1"])


def new_class(folder: Path, quick: bool, steps: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import learn_new_class as lnc
    from zor.export import export_learnable
    from zor.runtime import Learner
    d = lnc.data(quick)
    net = lnc.train_nine(d, 300 if quick else 2000)
    export_learnable(net, folder / "nine.onnx")
    learner = Learner(folder / "nine.onnx", threads=1)
    xd, yd = d["device_x"], lnc.one_hot(d["device_y"])
    sig = lambda h: 1.0 / (1.0 + np.exp(-h))                  # noqa: E731  (the output activation)
    score = lambda out, part: lnc.accuracy(out(d[part][0]), d[part][1])   # noqa: E731
    rows = []
    before = {k: v.copy() for k, v in learner.state.items()}
    ridge = before["weight_1"].copy()
    h = _hidden(before, xd)
    lam = 1.0
    ridge = np.linalg.solve(h.T @ h + lam * np.eye(h.shape[1]), h.T @ _logit(yd) + lam * ridge)
    fwd = lambda w1: (lambda x: sig(_hidden(before, x) @ w1))  # noqa: E731
    rows.append({"method": "before", "new": score(fwd(before["weight_1"]), "test_new"),
                 "old": score(fwd(before["weight_1"]), "test_old")})
    rng = np.random.default_rng(0)
    batches = [rng.integers(0, len(xd), 20) for _ in range(steps)]
    for idx in batches:
        learner.step(xd[idx], yd[idx])
        net.train_batch(xd[idx], yd[idx])
    rows.append({"method": "runtime Learner", "new": score(learner.predict, "test_new"),
                 "old": score(learner.predict, "test_old")})
    eng = lambda x: net.forward(x, train=False).numpy()       # noqa: E731
    rows.append({"method": "torch engine", "new": score(eng, "test_new"), "old": score(eng, "test_old")})
    rows.append({"method": "ridge read-out (numpy)", "new": score(fwd(ridge), "test_new"),
                 "old": score(fwd(ridge), "test_old")})
    return {"rows": rows, "steps": steps}


def _logit(y: np.ndarray) -> np.ndarray:
    """Targets of the sigmoid output as pre-activations (0/1 clipped to 0.02/0.98)."""
    p = np.clip(y, 0.02, 0.98)
    return np.log(p / (1.0 - p))


@command
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--rounds", type=click.IntRange(1), default=7)
@click.option("--quick", is_flag=True, help="fewer rounds and a smaller 9-class training run")
@click.option("--new-class-steps", type=click.IntRange(1), default=40)
@click.option("--only", type=click.Choice(["all", "steps", "masked"]), default="all",
              help="steps: the step-time rows alone; masked: the masked co-activity by activity alone")
def main(json_path: Optional[Path], rounds: int, quick: bool, new_class_steps: int, only: str) -> None:
    """Learning on the device vs the torch engine (see the module docstring)."""
    set_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        masked = masked_cost(folder, 3 if quick else rounds) if only in ("all", "masked") else []
        if only == "masked":
            print(format_table(masked, ["hidden_active", "masked_ms", "full_ms", "ratio"]))
            if json_path is not None:
                write_json(json_path, {"environment": environment(1), "masked": masked})
            return
        steps = [step_ratio(folder, s, 3 if quick else rounds, pool)
                 for s in ([784, 64, 784], [784, 256, 10]) for pool in (1, 50)]
        if only == "steps":
            print(format_table(steps, ["network", "batches", "engine_ms", "runtime_ms", "ratio", "hidden_active"]))
            if json_path is not None:
                write_json(json_path, {"environment": environment(1), "step_time": steps})
            return
        data = load_images()
        qs = quick_start(folder, data, seed=0, rounds=3)
        rss = peak_rss(folder, qs.pop("few"))
        nc = new_class(folder, quick, new_class_steps)
    print(format_table([{"figure": "quick start metric (runtime / engine)",
                         "value": f"{qs['runtime_metric']:.2f} / {qs['engine_metric']:.2f} %"},
                        {"figure": "500 steps wall, median of 3 (runtime / engine)",
                         "value": f"{qs['runtime_s']:.2f} / {qs['engine_s']:.2f} s (ratio {qs['wall_ratio']:.2f})"},
                        {"figure": "peak RSS learning (no torch)", "value": f"{rss['peak_rss_mb']:.1f} MB"}],
                       ["figure", "value"]))
    print()
    print(format_table(steps, ["network", "batches", "engine_ms", "runtime_ms", "ratio", "hidden_active"]))
    print()
    print(format_table(nc["rows"], ["method", "new", "old"]))
    print()
    print(format_table(masked, ["hidden_active", "masked_ms", "full_ms", "ratio"]))
    if json_path is not None:
        write_json(json_path, {"environment": environment(1), "quick_start": qs, "peak_rss": rss,
                               "step_time": steps, "new_class": nc, "masked": masked})


if __name__ == "__main__":
    main()
