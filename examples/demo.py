"""The end-to-end demo behind `make demo`.

Trains the Zor author's quick-start network (784-64-784, default settings) on one
Fashion-MNIST image per class, evaluates it on unseen test images against the
mean-image baseline, saves a checkpoint and a PNG of originals and reconstructions,
and prints what it did. Uses the full Fashion-MNIST when it is on the machine
(Debian's dataset-fashion-mnist, or $ZOR_FASHION_MNIST), else the subset bundled in
the package, so it runs anywhere offline.

    python examples/demo.py --out demo-out [--steps 500]
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
    from zor import datasets

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
    from zor.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return True


def run_demo(out: Path, steps: int = STEPS, n_test: int = 1000, progress: bool = True) -> dict:
    import torch

    from zor import Layer, Zor, metrics
    from zor.fileio import write_text_atomic

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
    zor_m = metrics.reconstruction(recon, xt)
    mean_m = metrics.reconstruction(np.broadcast_to(x10.mean(0), xt.shape), xt)
    print(f"trained {steps} steps of batch {BATCH} in {seconds:.2f} s")
    print(f"{'':14s}{'seed metric':>12s}{'PSNR':>9s}")
    print(f"{'Zor':14s}{zor_m['accuracy']:11.2f}%{zor_m['psnr']:7.2f} dB")
    print(f"{'mean image':14s}{mean_m['accuracy']:11.2f}%{mean_m['psnr']:7.2f} dB")

    ckpt = out / "fewshot.zor"
    snn.save(ckpt)
    png = out / "reconstructions.png"
    drew = save_grid(png, xt, {"Zor": recon, "mean image": np.broadcast_to(x10.mean(0), xt.shape)})
    summary = {
        "data": source, "train_images": len(x10), "test_images": len(xt), "steps": steps, "batch": BATCH,
        "train_seconds": seconds, "zor": zor_m, "mean_image": mean_m,
        "checkpoint": ckpt.name, "png": png.name if drew else None,
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2))
    print(f"wrote {ckpt}, {out / 'summary.json'}" + (f", {png}" if drew else " (no matplotlib: no PNG)"))
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo-out", help="folder for the checkpoint, PNG and summary")
    parser.add_argument("--steps", type=int, default=STEPS, help="training steps (default: the seed's 500)")
    parser.add_argument("--test", type=int, default=1000, help="number of unseen test images")
    args = parser.parse_args(argv)
    if args.steps < 0 or args.test < 1:
        parser.error("--steps must be ≥ 0 and --test ≥ 1")
    run_demo(Path(args.out), steps=args.steps, n_test=args.test)
    return 0


if __name__ == "__main__":
    sys.exit(main())
