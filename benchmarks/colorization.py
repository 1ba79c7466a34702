"""Colorization (grey → colour) on patches of photos: Zor vs backprop vs predicting grey, at equal wall time.

Data (``zor.tasks.images.colorization_data``): the colour photos bundled with scikit-image
and scikit-learn, area-downscaled by 2, 4 and 8 and cut into 16×16 patches. Training
photos: astronaut, coffee, rocket, china, immunohistochemistry (overlapping patches,
plus mirror images); **held out**, never trained on: chelsea (the cat) and flower
(non-overlapping patches). Also the 20 CIFAR-10 test images shipped in the foolbox
wheel, colourised whole (32×32) by tiling (``zor.runtime.tasks.colorize``: 16×16
patches every 8 pixels, blended), when the wheel is given (``--cifar DIR`` or
$ZOR_FOOLBOX).

The model sees L/100 of a patch (256 values) and predicts its CIE Lab a and b planes
(512 values, encoded as (v/128 + 1)/2):

    zor     Zor([Layer(256), Layer(256), Layer(512, activation_function="sigmoid")]), Zor.fit
    mlp     256-256-512 ReLU MLP, sigmoid output, MSE, AdamW (equal size)
    grey    a = b = 0 everywhere: the input itself, as a colour image
    mean    the mean training (a, b) of each pixel position

Metrics (the output recombined with the input's own lightness):

    PSNR        dB, of the RGB image against the original (peak 1)
    ΔE_ab       mean √((Δa)² + (Δb)²) per pixel, CIE Lab units (the colour error; grey scores
                the colours' mean chroma)
    chroma      mean C_pred / mean C_true, C = √(a² + b²): 0 for grey, 1 when the
                prediction is as colourful as the truth (regression to the mean desaturates)

Every trained method runs for ``--budget`` seconds of wall time on one CPU thread,
medians over ``--seeds`` seeds.

Usage (from the repository root):
    python -m benchmarks.colorization --json out.json [--cifar DIR]
    python -m benchmarks.colorization --quick --json /tmp/q.json      # smoke test
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import click
import numpy as np

from benchmarks import common
from benchmarks.baselines.base import FitResult, fit_zor
from benchmarks.baselines.images import MLPRegressor
from zor.common.errors import DataNotFoundError

__all__ = ["PATCH", "HIDDEN", "ZorColorizer", "EngineModel", "patch_metrics", "image_metrics", "build", "run", "main"]

PATCH = 16
HIDDEN = 256


class ZorColorizer:
    """Zor mapping an L/100 patch to its encoded (a, b) planes (sigmoid output: 0 charge = grey)."""

    def __init__(self, seed: int = 0, size: int = PATCH, hidden: int = HIDDEN, batch_size: int = 48,
                 device: str = "cpu") -> None:
        from zor import Layer, Zor
        from zor.tasks.images import colorize_task

        n = size * size
        self.net = Zor([Layer(n), Layer(hidden), Layer(2 * n, activation_function="sigmoid")], seed=seed,
                       device=device, task=colorize_task(size))
        self.batch_size, self.name = batch_size, "zor"

    def fit(self, x: np.ndarray, y: np.ndarray, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        return fit_zor(self.net, x, y, self.batch_size, time_budget=time_budget, steps=steps)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(x).cpu().numpy()


class _Constant:
    """grey (code 0.5) or the mean training code per position; "training" takes no time."""

    def __init__(self, kind: str) -> None:
        self.kind, self.name, self.code = kind, kind, None

    def fit(self, x: np.ndarray, y: np.ndarray, **_: Any) -> FitResult:
        self.code = np.full(y.shape[1], 0.5, np.float32) if self.kind == "grey" else y.mean(axis=0)
        return FitResult(steps=0, seconds=0.0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.code, (len(x), len(self.code))).copy()


class EngineModel:
    """A trained predictor dressed as a :class:`zor.runtime.Model` for the :mod:`zor.runtime.tasks`
    helpers: ``metadata.task``, ``sizes`` and ``run(rows)["output"]``."""

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray], task: dict, n_in: int, n_out: int) -> None:
        self.metadata = SimpleNamespace(task=task)
        self.sizes = [n_in, n_out]
        self._predict = predict

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {"output": np.asarray(self._predict(np.asarray(x, np.float32)), np.float32)}


METHODS = {
    "zor": lambda seed: ZorColorizer(seed=seed),
    "mlp": lambda seed: MLPRegressor((PATCH * PATCH, HIDDEN, 2 * PATCH * PATCH), output="sigmoid", seed=seed),
    "grey": lambda seed: _Constant("grey"),
    "mean": lambda seed: _Constant("mean"),
}
TRAINED = ("zor", "mlp")


def build(name: str, seed: int):
    if name not in METHODS:
        from zor.common.errors import ConfigError

        raise ConfigError(f"unknown method {name!r}: expected some of {', '.join(METHODS)}")
    return METHODS[name](seed)


def patch_metrics(model, grey: np.ndarray, rgb: np.ndarray) -> dict[str, float]:
    from zor.common.imagemath import colour_error, rgb_from_planes

    pred = rgb_from_planes(grey, model.predict(grey), PATCH, PATCH)
    return colour_error(pred, rgb)


def image_metrics(model, images: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """Whole images colourised by tiling; (metrics, the colourised images)."""
    from zor.runtime.tasks import colorize

    from zor.common.imagemath import colour_error
    from zor.tasks.images import colorize_task

    adapter = EngineModel(model.predict, colorize_task(PATCH), PATCH * PATCH, 2 * PATCH * PATCH)
    out = np.stack([colorize(adapter, img) for img in images])
    return colour_error(out, images), out


def run(data: dict, cifar: Optional[np.ndarray], names: list[str], seeds: list[int], budget: float,
        show_progress: bool = True) -> list[dict[str, Any]]:
    xg, yab = data["train"]
    tg, _ = data["test"]
    for name in names:                                   # untimed warm-up
        if name in TRAINED:
            build(name, 0).fit(xg[:48], yab[:48], steps=2)

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        name, seed = cell["method"], cell["seed"]
        common.seed_everything(seed)
        model = build(name, seed)
        fit = model.fit(xg, yab, time_budget=budget) if name in TRAINED else model.fit(xg, yab)
        row = {"method": name, "seed": seed, "budget_s": budget if name in TRAINED else 0.0,
               "train_seconds": fit.seconds, "steps": fit.steps,
               **{f"held_out_{k}": v for k, v in patch_metrics(model, tg, data["test_rgb"]).items()}}
        if cifar is not None:
            row.update({f"cifar_{k}": v for k, v in image_metrics(model, cifar)[0].items()})
        return row

    return common.run_grid(common.grid(seed=seeds, method=names), measure, "colorization", show_progress,
                           note=lambda r: f"{r['method']}: {r['held_out_psnr']:.2f} dB")


def load_cifar(path: Optional[str]) -> tuple[Optional[np.ndarray], str]:
    from zor.tasks.images import FOOLBOX_ENV, load_cifar10_samples

    if path is None and not os.environ.get(FOOLBOX_ENV):
        return None, f"no foolbox wheel given (--cifar DIR or ${FOOLBOX_ENV}): CIFAR-10 rows skipped"
    try:
        x, _ = load_cifar10_samples(path)
    except DataNotFoundError as exc:
        return None, f"CIFAR-10 rows skipped: {exc}"
    return x, f"{len(x)} CIFAR-10 test images from the foolbox wheel"


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--budget", type=click.FloatRange(min=0.01), default=None,
              help="Seconds of training per trained method and seed. Default 20.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Default 3.")
@click.option("--methods", "methods_text", default=None, help=f"Comma-separated, some of {', '.join(METHODS)}.")
@click.option("--cifar", "cifar_path", type=click.Path(path_type=Path), default=None,
              help="Folder holding the foolbox wheel (pip download foolbox --no-deps -d DIR), or the .whl.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke test: coffee/flower at scale 8 only, tiny budget, 1 seed.")
@click.option("--no-progress", is_flag=True)
def main(json_path: Optional[Path], budget: Optional[float], seeds: Optional[int], methods_text: Optional[str],
         cifar_path: Optional[Path], threads: int, quick: bool, no_progress: bool) -> None:
    """Zor vs backprop vs grey on colourising held-out photo patches (and CIFAR-10 images)."""
    from zor.tasks.images import colorization_data

    common.check_json_folder(json_path)
    names = common.parse_methods(methods_text, list(METHODS))
    common.set_threads(threads)
    budget = budget if budget is not None else (0.3 if quick else 20.0)
    n_seeds = seeds or (1 if quick else 3)
    if quick:
        data = colorization_data(PATCH, 8, scales=(8,), train=("coffee",), held_out=("flower",))
    else:
        data = colorization_data(PATCH, 8)
    cifar, cifar_note = load_cifar(None if cifar_path is None else str(cifar_path))
    env = common.environment(threads)
    click.echo(f"data: {len(data['train'][0]):,} training patches from {', '.join(data['photos']['train'])}; "
               f"{len(data['test'][0]):,} held-out patches from {', '.join(data['photos']['held_out'])} "
               f"(scales 1/{', 1/'.join(map(str, data['photos']['scales']))}, {PATCH}x{PATCH}); {cifar_note}")
    click.echo(f"equal wall time: {budget:g} s per trained method and seed; {threads} thread(s); {env['cpu']}")
    rows = run(data, cifar, names, list(range(n_seeds)), budget, show_progress=not no_progress)
    figures = [k for k in rows[0] if k.startswith(("held_out_", "cifar_"))]
    summary = common.summarise(rows, ("method",), figures + ["train_seconds", "steps", "budget_s"])
    click.echo(f"\nColorization of held-out photo patches (median of {n_seeds} seed(s)); ΔE_ab in Lab units, "
               "chroma = colourfulness relative to the truth")
    cols = ["method", "held_out_psnr", "held_out_delta_e_ab", "held_out_chroma_ratio"]
    heads = ["method", "PSNR dB", "ΔE_ab", "chroma"]
    if cifar is not None:
        cols += ["cifar_psnr", "cifar_delta_e_ab", "cifar_chroma_ratio"]
        heads += ["CIFAR PSNR", "CIFAR ΔE_ab", "CIFAR chroma"]
    click.echo(common.format_table(summary, cols + ["steps", "train_seconds"], heads + ["steps", "train s"]))
    if json_path is not None:
        common.write_json(json_path, {
            "benchmark": "colorization", "environment": env,
            "config": {"budget_s": budget, "seeds": n_seeds, "patch": PATCH, "hidden": HIDDEN, "methods": names,
                       "photos": data["photos"], "train_patches": len(data["train"][0]),
                       "held_out_patches": len(data["test"][0]), "cifar": cifar_note, "quick": quick},
            "rows": rows, "summary": summary})
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
