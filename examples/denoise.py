"""Denoising Fashion-MNIST with Zor, end to end: train, export, verify, serve images of any size.

    python examples/denoise.py --out out/denoise [--steps 3000] [--train-images 10000] [--quick]

1. gives every clean training image two noisy copies, one with Gaussian noise (σ 0.3)
   and one with salt-and-pepper noise (p 0.2) (``zor.tasks.images``), so one model learns both;
2. trains ``Zor([Layer(784), Layer(256), Layer(784)])`` noisy → clean;
3. scores it on unseen test images with each noise: PSNR, and the gain over the noisy input;
4. exports float32 (verified) and int8 (calibrated on noisy training images);
5. serves it with the torch-free runtime (``zor.runtime.tasks.denoise``: an image of
   any size is tiled into overlapping 28×28 patches and blended back): a noisy 56×56
   mosaic of four items through a PNG file, as ``zor-run --task denoise`` does;
6. times float32 vs int8 at batch 1 with ``zor-bench``;
7. writes ``denoise.png``: noisy input, Zor's output, the clean image, for both noises.

Full Fashion-MNIST is used when it is on the machine, else the bundled subset.
``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

NOISE = {"gaussian": 0.3, "salt_and_pepper": 0.2}


def figure(path: Path, rows: list[tuple[str, np.ndarray]], title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), n, figsize=(n * 1.0, len(rows) * 1.05), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.clip(images[c].reshape(28, 28), 0, 1), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    from zor.common.fileio import write_figure_png

    write_figure_png(fig, path, dpi=80, colors=48)    # a small palette keeps the README figure small
    plt.close(fig)
    return True


# what the export calls its reconstruction metric, for people
METRIC_NAMES = {"seed_accuracy": "100·(1 − MAE)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="out/denoise", help="folder for the checkpoint, exports, PNG, summary")
    parser.add_argument("--steps", type=int, default=3000, help="training mini-batches of 48")
    parser.add_argument("--train-images", type=int, default=10000, help="clean training images")
    parser.add_argument("--quick", action="store_true", help="a smoke run: bundled data, few steps, small benchmark")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.train_images < 1:
        parser.error("--steps and --train-images must be ≥ 1")

    import torch
    from zor.export import export
    from zor.runtime import Model
    from zor.runtime.bench import format_table, run_bench
    from zor.runtime.tasks import denoise, load_image, run_task, save_image

    from zor import Layer, Zor
    from zor.common.fileio import write_text_atomic
    from zor.common.imagemath import add_noise
    from zor.common.metrics import psnr
    from zor.tasks import datasets
    from zor.tasks.images import denoise_task

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.quick:
            raise datasets.DataNotFoundError("quick run: the bundled subset")
        x, _ = datasets.load_fashion_mnist("train")
        xt, _ = datasets.load_fashion_mnist("test")
        source = "Fashion-MNIST"
    except datasets.DataNotFoundError:
        x, _ = datasets.load_bundled("train")
        xt, _ = datasets.load_bundled("test")
        source = "the bundled Fashion-MNIST subset"
    x = x[: min(args.train_images, len(x))]
    xt = xt[:1000]
    rng = np.random.default_rng(0)
    noisy = np.concatenate([add_noise(x, kind, level, rng) for kind, level in NOISE.items()]).astype(np.float32)
    clean = np.concatenate([x] * len(NOISE))
    tests = {kind: add_noise(xt, kind, level, np.random.default_rng(1)).astype(np.float32)
             for kind, level in NOISE.items()}
    print(f"data: {len(x):,} clean training images from {source}, each with one copy per noise "
          f"({', '.join(f'{k} {v}' for k, v in NOISE.items())}); {len(xt):,} unseen test images")

    steps = 60 if args.quick else args.steps
    task = denoise_task({"kind": "mixed", **NOISE})
    net = Zor([Layer(784), Layer(256), Layer(784)], seed=0, task=task)
    start = time.perf_counter()
    net.fit(noisy, clean, steps=steps, batch_size=48, progress=False)
    seconds = time.perf_counter() - start
    scores = {}
    print(f"trained Zor {net.sizes} for {steps} steps in {seconds:.1f} s; PSNR on unseen test images:")
    for kind, xn in tests.items():
        out_k = np.clip(net.predict(xn).cpu().numpy(), 0, 1)
        scores[kind] = {"noisy": psnr(xn, xt), "zor": psnr(out_k, xt)}
        print(f"  {kind:16s} noisy {scores[kind]['noisy']:.2f} dB → Zor {scores[kind]['zor']:.2f} dB "
              f"(gain {scores[kind]['zor'] - scores[kind]['noisy']:+.2f} dB)")

    ckpt = out / "denoise.zor"
    net.save(ckpt)
    fp32 = export(ckpt, out / "denoise.onnx")
    int8 = export(ckpt, out / "denoise-int8.onnx", quantize="int8", calibration=noisy[::max(1, len(noisy) // 512)],
                  max_drop=0.5)
    m8 = int8.quantization["metric"]
    print(f"export float32 {fp32.bytes:,} bytes (verified: {fp32.verification['passed']}); int8 {int8.bytes:,} bytes, "
          f"{METRIC_NAMES.get(m8['metric'], m8['metric'])} of int8 against the float output {m8['candidate']:.2f} "
          f"(drop {m8['drop']:.2f}, budget 0.5)")

    model = Model(out / "denoise.onnx", device="auto", threads=1)
    model8 = Model(out / "denoise-int8.onnx", device="auto", threads=1)
    runtime = {kind: {"float32": psnr(np.stack([denoise(model, img.reshape(28, 28)) for img in xn[:200]]).reshape(200, -1),
                                      xt[:200]),
                      "int8": psnr(np.stack([denoise(model8, img.reshape(28, 28)) for img in xn[:200]]).reshape(200, -1),
                                   xt[:200])}
               for kind, xn in tests.items()}
    print("runtime on 200 test images: " + "; ".join(f"{k} float32 {v['float32']:.2f} dB, int8 {v['int8']:.2f} dB"
                                                     for k, v in runtime.items()))
    mosaic_clean = np.block([[xt[0].reshape(28, 28), xt[1].reshape(28, 28)],
                             [xt[2].reshape(28, 28), xt[3].reshape(28, 28)]])
    mosaic = add_noise(mosaic_clean, "gaussian", NOISE["gaussian"], np.random.default_rng(2))
    save_image(out / "mosaic-noisy.png", mosaic)
    res = run_task(model, "denoise", load_image(out / "mosaic-noisy.png"))
    save_image(out / "mosaic-denoised.png", res.image)
    mosaic_scores = {"noisy": psnr(np.round(mosaic * 255) / 255, mosaic_clean), "zor": psnr(res.image, mosaic_clean)}
    print(f"zor-run --task denoise mosaic-noisy.png (56x56) → mosaic-denoised.png: {mosaic_scores['noisy']:.2f} → "
          f"{mosaic_scores['zor']:.2f} dB; {'; '.join(res.notes)}")

    bench = run_bench([str(out / "denoise.onnx"), str(out / "denoise-int8.onnx")], device="auto", batch=64,
                      calls=20 if args.quick else 200, repeats=1 if args.quick else 5, threads=1,
                      references={"torch": lambda rows: net.run(torch.from_numpy(rows))[0].cpu().numpy()},
                      inputs=tests["gaussian"][:256], rss=False)
    print(format_table(bench))

    n = 8
    rows = []
    for kind, xn in tests.items():
        rows += [(f"{kind}\nnoisy", xn[:n]), ("Zor", model.run(xn[:n])["output"]), ("clean", xt[:n])]
    drew = figure(out / "denoise.png", rows, "Zor denoising unseen Fashion-MNIST images (one model, both noises)")
    summary = {"data": source, "train_images": len(x), "noise": NOISE, "steps": steps, "train_seconds": seconds,
               "psnr": scores, "runtime_psnr_200": runtime, "mosaic": mosaic_scores, "zor_run_notes": res.notes,
               "export": {"float32_bytes": fp32.bytes, "int8_bytes": int8.bytes, "int8_metric": m8}, "bench": bench}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=float))
    print(f"wrote {out}/" + (" (denoise.png)" if drew else " (no matplotlib: no PNG)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
