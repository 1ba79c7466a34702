"""Colorization with Zor, end to end: train on photo patches, export, serve whole images of any size.

    python examples/colorize.py --out out/colorize [--steps 4000] [--cifar DIR] [--quick]

1. cuts the colour photos bundled with scikit-image and scikit-learn into 16×16 patches
   (``zor.tasks.images.colorization_data``; chelsea and flower are held out, never trained on);
2. trains ``Zor([Layer(256), Layer(256), Layer(512, activation_function="sigmoid")])``:
   the lightness L/100 of a patch in, its CIE Lab a and b planes out;
3. scores it on held-out patches against predicting grey: PSNR, ΔE_ab (colour error in
   Lab units) and chroma (colourfulness relative to the truth);
4. exports float32 (verified) and int8 (calibrated on training patches);
5. colourises whole images with the torch-free runtime (``zor.runtime.tasks.colorize``
   tiles them into overlapping patches and blends them back): the held-out photos and,
   given the foolbox wheel (``--cifar DIR``, or $ZOR_FOOLBOX), the 20 CIFAR-10 test images;
6. times float32 vs int8 at batch 1 with ``zor-bench``;
7. writes ``colorize.png``: grey input, Zor's colours, the original, side by side.

Needs scikit-image and scikit-learn (the photos). ``--quick`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def figure(path: Path, columns: list[tuple[str, list[np.ndarray]]], names: list[str], title: str) -> bool:
    """A grid legible at its display size: one row per image (named on the left), one column per
    (label, images): grey input, Zor's colours, the original."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    n = len(names)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.2 * len(columns), 1.7 * n + 0.6), squeeze=False)
    for c, (label, images) in enumerate(columns):
        for r, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(names[r], fontsize=9)
            if r == 0:
                ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    from zor.common.fileio import write_figure_png

    write_figure_png(fig, path, dpi=100, colors=128)    # a small palette keeps the figure small
    plt.close(fig)
    return True


# what the export calls its reconstruction metric, for people
METRIC_NAMES = {"seed_accuracy": "100·(1 − MAE)"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--out", default="out/colorize", help="folder for the checkpoint, exports, PNG, summary")
    parser.add_argument("--steps", type=int, default=4000, help="training mini-batches of 48")
    parser.add_argument("--cifar", default=None,
                        help="also colourise the 20 CIFAR-10 test images that ship inside the foolbox wheel: "
                             "a folder holding that wheel (pip download foolbox --no-deps -d DIR)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one photo, few steps, small benchmark")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be ≥ 1")

    import torch
    from zor.export import export
    from zor.runtime import Model
    from zor.runtime.bench import format_table, run_bench
    from zor.runtime.tasks import colorize, lightness, load_image, run_task, save_image

    from zor import Layer, Zor
    from zor.common.errors import DataNotFoundError
    from zor.common.fileio import write_text_atomic
    from zor.common.imagemath import colour_error, downscale, rgb_from_planes
    from zor.tasks.images import (
        FOOLBOX_ENV,
        colorization_data,
        colorize_task,
        load_cifar10_samples,
        load_photo,
    )

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = 16
    if args.quick:
        data = colorization_data(size, 8, scales=(8,), train=("coffee",), held_out=("flower",))
    else:
        data = colorization_data(size, 8)
    (xg, yab), (tg, tab) = data["train"], data["test"]
    print(f"data: {len(xg):,} training patches from {', '.join(data['photos']['train'])}; {len(tg):,} held-out "
          f"patches from {', '.join(data['photos']['held_out'])}")

    steps = 50 if args.quick else args.steps
    net = Zor([Layer(size * size), Layer(256), Layer(2 * size * size, activation_function="sigmoid")], seed=0,
              task=colorize_task(size))
    start = time.perf_counter()
    net.fit(xg, yab, steps=steps, batch_size=48, progress=False)
    seconds = time.perf_counter() - start
    pred = net.predict(tg).cpu().numpy()
    zor_m = colour_error(rgb_from_planes(tg, pred, size, size), data["test_rgb"])
    grey_m = colour_error(rgb_from_planes(tg, np.full_like(tab, 0.5), size, size), data["test_rgb"])
    print(f"trained Zor {net.sizes} for {steps} steps in {seconds:.1f} s; held-out patches:")
    for name, m in (("Zor", zor_m), ("grey", grey_m)):
        print(f"  {name:5s} PSNR {m['psnr']:.2f} dB, ΔE_ab {m['delta_e_ab']:.2f}, chroma {m['chroma_ratio']:.2f}")

    ckpt = out / "colorize.zor"
    net.save(ckpt)
    fp32 = export(ckpt, out / "colorize.onnx")
    calib = xg[np.random.default_rng(0).choice(len(xg), size=min(512, len(xg)), replace=False)]
    int8 = export(ckpt, out / "colorize-int8.onnx", quantize="int8", calibration=calib, max_drop=0.5)
    m8 = int8.quantization["metric"]
    print(f"export float32 {fp32.bytes:,} bytes (verified: {fp32.verification['passed']}); int8 {int8.bytes:,} bytes, "
          f"{METRIC_NAMES.get(m8['metric'], m8['metric'])} of int8 against the float output {m8['candidate']:.2f} "
          f"(drop {m8['drop']:.2f}, budget 0.5)")

    model = Model(out / "colorize.onnx", device="auto", threads=1)
    model8 = Model(out / "colorize-int8.onnx", device="auto", threads=1)
    photos = {name: downscale(load_photo(name), 4) for name in data["photos"]["held_out"]}
    whole = {name: colour_error(colorize(model, lightness(img)), img) for name, img in photos.items()}
    whole8 = {name: colour_error(colorize(model8, lightness(img)), img) for name, img in photos.items()}
    for name, img in photos.items():
        print(f"  whole held-out photo {name} ({img.shape[0]}x{img.shape[1]}): float32 ΔE_ab "
              f"{whole[name]['delta_e_ab']:.2f}, int8 {whole8[name]['delta_e_ab']:.2f}, grey "
              f"{colour_error(colorize_grey(img), img)['delta_e_ab']:.2f}")

    cifar, cifar_metrics = None, None
    try:
        wheel = args.cifar if args.cifar is not None else os.environ.get(FOOLBOX_ENV)
        if wheel:
            cifar, _ = load_cifar10_samples(wheel)
    except DataNotFoundError as exc:
        print(f"note: {exc}")
    if cifar is not None:
        out_c = np.stack([colorize(model, img) for img in cifar])
        grey_c = np.stack([colorize_grey(img) for img in cifar])
        cifar_metrics = {"zor": colour_error(out_c, cifar), "grey": colour_error(grey_c, cifar)}
        print(f"  20 CIFAR-10 test images (32x32, tiled): Zor ΔE_ab {cifar_metrics['zor']['delta_e_ab']:.2f}, "
              f"PSNR {cifar_metrics['zor']['psnr']:.2f} dB; grey ΔE_ab {cifar_metrics['grey']['delta_e_ab']:.2f}, "
              f"PSNR {cifar_metrics['grey']['psnr']:.2f} dB")

    name0 = data["photos"]["held_out"][0]
    save_image(out / f"{name0}-grey.png", lightness(photos[name0]))
    res = run_task(model, "colorize", load_image(out / f"{name0}-grey.png"))
    save_image(out / f"{name0}-colour.png", res.image)
    print(f"zor-run --task colorize {name0}-grey.png → {name0}-colour.png; {'; '.join(res.notes)}")

    bench = run_bench([str(out / "colorize.onnx"), str(out / "colorize-int8.onnx")], device="auto", batch=64,
                      calls=20 if args.quick else 200, repeats=1 if args.quick else 5, threads=1,
                      references={"torch": lambda rows: net.run(torch.from_numpy(rows))[0].cpu().numpy()},
                      inputs=xg[:256], rss=False)
    print(format_table(bench))

    shown = {n: img for n, img in photos.items()}
    if cifar is not None:
        for k in range(6):
            shown[f"cifar {k}"] = cifar[k]
    names = list(shown)
    rows = [("grey input", [lightness(shown[n]) for n in names]),
            ("Zor", [colorize(model, lightness(shown[n])) for n in names]),
            ("original", [shown[n] for n in names])]
    drew = figure(out / "colorize.png", rows, names, "Zor colorization of photos never trained on\n"
                  "(16x16 patches, tiled and blended)")
    summary = {"photos": data["photos"], "train_patches": len(xg), "held_out_patches": len(tg), "steps": steps,
               "train_seconds": seconds, "held_out": {"zor": zor_m, "grey": grey_m},
               "whole_photos": {"float32": whole, "int8": whole8}, "cifar": cifar_metrics,
               "export": {"float32_bytes": fp32.bytes, "int8_bytes": int8.bytes, "int8_metric": m8},
               "zor_run_notes": res.notes, "bench": bench}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2, default=float))
    print(f"wrote {out}/" + (" (colorize.png)" if drew else " (no matplotlib: no PNG)"))
    return 0


def colorize_grey(rgb: np.ndarray) -> np.ndarray:
    """The 'predict grey' answer for an RGB image: its own lightness with a = b = 0."""
    from zor.common.imagemath import lab_to_rgb, rgb_to_lab

    lab = rgb_to_lab(rgb)
    lab[..., 1:] = 0.0
    return lab_to_rgb(lab)


if __name__ == "__main__":
    sys.exit(main())
