"""The end-to-end demo behind `make demo`.

1. Trains the Zor author's quick-start network (784-64-784, default settings) on one
   Fashion-MNIST image per class and evaluates it on unseen test images against the
   mean-image baseline; saves the checkpoint and a PNG of originals and reconstructions.
2. Exports it with zor-export to float32 and int8 ONNX files (each verified against
   the engine at export).
3. Runs both files on the torch-free runtime: the metric on the same test images,
   the largest difference from the engine, and the batch-1 latency against the torch
   engine's forward.
4. With ``--tour``: a short tour of the other image tasks (classification,
   colorization, denoising: each trained, exported and served by the runtime).

Uses the full Fashion-MNIST when it is on the machine (Debian's
dataset-fashion-mnist, or $ZOR_FASHION_MNIST), else the subset bundled in the
package, so it runs anywhere offline.

    python examples/demo.py --out demo-out [--steps 500] [--tour]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

STEPS = 500        # the seed's quick start: 500 steps ...
BATCH = 48         # ... of random batches of 48 drawn from the 10 training images


def load_data(n_test: int = 1000):
    """(train10, test images, where the data came from)."""
    from zor.tasks import datasets

    try:
        x, y = datasets.load_fashion_mnist("train")
        xt, _ = datasets.load_fashion_mnist("test")
        source = f"Fashion-MNIST ({datasets.find_fashion_mnist()})"
    except datasets.DataNotFoundError:
        x, y = datasets.load_bundled("train")
        xt, _ = datasets.load_bundled("test")
        source = "the Fashion-MNIST subset bundled with zor"
    return x[datasets.few_shot(y, 1)], xt[:n_test], source


def save_grid(path: Path, originals: np.ndarray, outputs: dict[str, np.ndarray], n: int = 10) -> bool:
    """Rows: originals, then one row per named output; returns False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [("original", originals)] + list(outputs.items())
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.1, len(rows) * 1.25))
    for r, (name, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(imgs[c].reshape(28, 28), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("Zor 10-shot Fashion-MNIST reconstruction (unseen test images)", fontsize=9)
    fig.tight_layout()
    from zor.common.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True


def run_demo(out: Path, steps: int = STEPS, n_test: int = 1000, progress: bool = True) -> dict:
    import torch

    from zor import Layer, Zor
    from zor.common.fileio import write_text_atomic

    # Networks this small run fastest on one thread; with more, torch's threads wait on
    # each other for every small op whenever another process holds a core (100x slower).
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x10, xt, source = load_data(n_test)
    print(f"data: {len(x10)} training images (one per class) and {len(xt)} unseen test images from {source}")

    snn = Zor([Layer(784), Layer(64), Layer(784)], seed=0,
              task={"name": "reconstruct",
                    "input": {"shape": [None, 784], "range": [0.0, 1.0],
                              "preprocessing": "28x28 grey image, row-major, pixel/255",
                              "image": {"height": 28, "width": 28, "channels": 1}},
                    "output": {"shape": [None, 784], "range": [0.0, 1.0], "meaning": "reconstructed image"}})
    print(f"model: Zor {snn.sizes}, rule={snn.config.rule!r}, optimizer={snn.config.optimizer!r}, "
          f"device={snn.device}")
    x10_t = torch.from_numpy(x10).to(snn.device)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    bar = range(steps)
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(bar, desc="training", unit="step", leave=False)
        except ImportError:
            pass
    for _ in bar:                                    # the seed's quick start, as a user pastes it
        batch = x10_t[torch.randint(0, len(x10), (BATCH,), generator=gen)]
        snn.train_batch(batch, batch)
    seconds = time.perf_counter() - start

    recon = snn.forward(torch.from_numpy(xt).to(snn.device), train=False).cpu().numpy()
    zor_m = reconstruction_metrics(recon, xt)
    mean_m = reconstruction_metrics(np.broadcast_to(x10.mean(0), xt.shape), xt)
    print(f"trained {steps} steps of batch {BATCH} in {seconds:.2f} s; on the unseen test images:")
    print(f"{'':14s}{'100(1-MAE)':>12s}{'PSNR':>9s}")
    print(f"{'Zor':14s}{zor_m[METRIC]:11.2f}%{zor_m['psnr_db']:7.2f} dB")
    print(f"{'mean image':14s}{mean_m[METRIC]:11.2f}%{mean_m['psnr_db']:7.2f} dB")

    ckpt = out / "fewshot.zor"
    snn.save(ckpt)
    png = out / "reconstructions.png"
    drew = save_grid(png, xt, {"Zor": recon, "mean image": np.broadcast_to(x10.mean(0), xt.shape)})
    deployed = export_and_serve(snn, ckpt, x10, xt, recon, out)
    summary = {
        "data": source, "train_images": len(x10), "test_images": len(xt), "steps": steps, "batch": BATCH,
        "train_seconds": seconds, "zor": zor_m, "mean_image": mean_m,
        "checkpoint": ckpt.name, "png": png.name if drew else None, "runtime": deployed,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    print(f"wrote {ckpt}, {out / 'summary.json'}" + (f", {png}" if drew else " (no matplotlib: no PNG)"))
    return summary


METRIC = "one_minus_mae_percent"   # the Zor author's reconstruction metric, 100·(1 − MAE)


def reconstruction_metrics(output: np.ndarray, target: np.ndarray) -> dict:
    """100·(1 − MAE) (under its own name, not "accuracy"), MAE, MSE and PSNR in dB."""
    from zor.common import metrics

    m = metrics.reconstruction(output, target)
    return {METRIC: m["accuracy"], "mae": m["mae"], "mse": m["mse"], "psnr_db": m["psnr"]}


def _p50_ms(fn, calls: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def export_and_serve(snn, ckpt: Path, calibration: np.ndarray, xt: np.ndarray, recon: np.ndarray,
                     out: Path) -> dict:
    """Export float32 and int8, run both on the runtime, compare with the engine."""
    import torch
    from zor.export import export
    from zor.runtime import Model

    print("\nexport (zor-export) and the torch-free runtime:")
    print(f"{'file':18s}{'size KB':>9s}{'export s':>10s}{'100(1-MAE)':>13s}{'PSNR':>9s}{'max |Δ| vs engine':>20s}"
          f"{'p50 batch 1':>13s}")
    x1 = xt[:1]
    torch_ms = _p50_ms(lambda: snn.forward(torch.from_numpy(x1), train=False))
    rows = {}
    for key, mode, name in (("float32", "none", "fewshot.onnx"), ("int8", "int8", "fewshot-int8.onnx")):
        t0 = time.perf_counter()
        export(ckpt, out / name, quantize=mode, calibration=calibration if mode == "int8" else None,
               device="auto")
        seconds = time.perf_counter() - t0
        model = Model(out / name, device="auto", threads=1)
        y = model.run(xt)["output"]
        m = reconstruction_metrics(y, xt)
        ms = _p50_ms(lambda: model.run(x1))
        rows[key] = {"file": name, "bytes": (out / name).stat().st_size, "export_seconds": seconds,
                      "metric": m, "max_abs_diff_vs_engine": float(np.abs(y - recon).max()),
                      "p50_ms_batch1": ms, "profile": model.profile.name}
        r = rows[key]
        print(f"{name:18s}{r['bytes'] / 1024:9.1f}{seconds:10.2f}{m[METRIC]:12.2f}%{m['psnr_db']:6.2f} dB"
              f"{r['max_abs_diff_vs_engine']:20.2e}{ms:10.3f} ms")
    print(f"{'torch engine':18s}{'':9s}{'':10s}{'':13s}{'':9s}{'':20s}{torch_ms:10.3f} ms")
    print(f"runtime profile: {rows['float32']['profile']}; float32 runtime / torch latency "
          f"{rows['float32']['p50_ms_batch1'] / torch_ms:.2f}; int8 / float32 "
          f"{rows['int8']['p50_ms_batch1'] / rows['float32']['p50_ms_batch1']:.2f} (one thread, batch 1)")
    rows["torch_p50_ms_batch1"] = torch_ms
    return rows


TOUR = [  # (script, arguments): short runs of the task examples (about a minute in all)
    ("classify.py", ["--labels", "100", "--steps", "300"]),
    ("colorize.py", ["--steps", "1500"]),
    ("denoise.py", ["--steps", "800", "--train-images", "2000"]),
    ("learn_new_class.py", ["--quick"]),   # the runtime alone learns a 10th class from 10 images (seconds)
]


def tour(out: Path, quick: bool = False) -> None:
    """Run the image-task examples, each into its own folder under ``out``."""
    import subprocess

    here = Path(__file__).resolve().parent
    for script, args in TOUR:
        name = script.removesuffix(".py")
        cmd = [sys.executable, str(here / script), "--out", str(out / name)] + (["--quick"] if quick else args)
        print(f"\n== tour: {name} ({' '.join(cmd[2:])}) ==", flush=True)
        subprocess.run(cmd, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="demo-out", help="folder for the checkpoint, PNG and summary")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (the seed's quick start uses 500)")
    parser.add_argument("--test", type=int, default=1000, help="number of unseen test images")
    parser.add_argument("--tour", action="store_true", help="then a short tour of classify, colorize and denoise")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.test < 1:
        parser.error("--steps must be ≥ 0 and --test ≥ 1")
    out = Path(args.out)
    run_demo(out, steps=args.steps, n_test=args.test)
    if args.tour:
        tour(out)
    print(f"\ndone: {out}/ holds the few-shot checkpoint (fewshot.zor), its float32 and int8 exports "
          f"(fewshot.onnx, fewshot-int8.onnx), reconstructions.png and summary.json"
          + (", and one folder per task of the tour (classify/, colorize/, denoise/)" if args.tour else "")
          + ". Next: the quick start in README.md runs these files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
