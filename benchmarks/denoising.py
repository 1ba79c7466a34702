"""Fashion-MNIST denoising (Gaussian and salt-and-pepper noise): PSNR gain, Zor vs backprop, equal wall time.

Each clean training image appears ``--copies`` times with fresh noise (``zor.tasks.images``):

    gaussian          x̃ = clip(x + σ n, 0, 1), σ = 0.3
    salt_and_pepper   a pixel becomes 0 or 1 with probability p = 0.2

and the networks learn noisy → clean:

    zor       Zor([Layer(784), Layer(256), Layer(784)]), Zor.fit (defaults)
    mlp       784-256-784 ReLU MLP, sigmoid output, MSE, AdamW (equal size)
    median3   the 3×3 median filter (no training; the classic answer to salt-and-pepper)
    noisy     the noisy input itself (the floor every gain is measured from)

Scored on unseen test images with their own fixed noise: PSNR (dB, peak 1) of the
output against the clean image, and the gain over the noisy input's PSNR. Trained
methods get ``--budget`` seconds of wall time each (one CPU thread); medians over
``--seeds`` seeds (each seed draws its own training noise and initialisation).

Usage (from the repository root):
    python -m benchmarks.denoising --json out.json
    python -m benchmarks.denoising --quick --json /tmp/q.json      # smoke test
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import click
import numpy as np

from benchmarks import common
from benchmarks.baselines.base import FitResult, fit_zor
from benchmarks.baselines.images import MLPRegressor

__all__ = ["NOISE_LEVELS", "ZorDenoiser", "median3", "build", "run", "main"]

NOISE_LEVELS = {"gaussian": 0.3, "salt_and_pepper": 0.2}
HIDDEN = 256


class ZorDenoiser:
    """Zor mapping a noisy 28×28 image to the clean one."""

    def __init__(self, noise: dict, seed: int = 0, hidden: int = HIDDEN, batch_size: int = 48,
                 device: str = "cpu") -> None:
        from zor import Layer, Zor
        from zor.tasks.images import denoise_task

        self.net = Zor([Layer(784), Layer(hidden), Layer(784)], seed=seed, device=device, task=denoise_task(noise))
        self.batch_size, self.name = batch_size, "zor"

    def fit(self, x: np.ndarray, y: np.ndarray, *, time_budget: Optional[float] = None,
            steps: Optional[int] = None) -> FitResult:
        return fit_zor(self.net, x, y, self.batch_size, time_budget=time_budget, steps=steps)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.clip(self.net.predict(x).cpu().numpy(), 0.0, 1.0)


def median3(x: np.ndarray, height: int = 28, width: int = 28) -> np.ndarray:
    """3×3 median filter of each row seen as a (height, width) image (edges replicated)."""
    img = np.asarray(x).reshape(-1, height, width)
    pad = np.pad(img, ((0, 0), (1, 1), (1, 1)), mode="edge")
    shifts = [pad[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)]
    return np.median(np.stack(shifts), axis=0).reshape(len(img), -1)


class _Filter:
    def __init__(self, kind: str) -> None:
        self.kind = self.name = kind

    def fit(self, x: np.ndarray, y: np.ndarray, **_: Any) -> FitResult:
        return FitResult(steps=0, seconds=0.0)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return median3(x) if self.kind == "median3" else np.asarray(x)


METHODS = {
    "zor": lambda noise, seed: ZorDenoiser(noise, seed=seed),
    "mlp": lambda noise, seed: MLPRegressor((784, HIDDEN, 784), output="sigmoid", seed=seed),
    "median3": lambda noise, seed: _Filter("median3"),
    "noisy": lambda noise, seed: _Filter("noisy"),
}
TRAINED = ("zor", "mlp")


def build(name: str, noise: dict, seed: int):
    if name not in METHODS:
        from zor.common.errors import ConfigError

        raise ConfigError(f"unknown method {name!r}: expected some of {', '.join(METHODS)}")
    return METHODS[name](noise, seed)


def run(x_train: np.ndarray, x_test: np.ndarray, noises: dict, names: list[str], seeds: list[int], budget: float,
        copies: int, show_progress: bool = True) -> list[dict[str, Any]]:
    """Every noise × seed × method: trained methods for ``budget`` s each, scored on the same noisy test images."""
    from zor.common.imagemath import noisy_pairs
    from zor.common.metrics import psnr

    tests = {kind: noisy_pairs(x_test, kind, level, seed=12345) for kind, level in noises.items()}  # the same for all
    for kind, level in noises.items():                                   # untimed warm-up
        tn, tc = tests[kind]
        for name in names:
            if name in TRAINED:
                build(name, {"kind": kind, "level": level}, 0).fit(tn[:48], tc[:48], steps=2)
    train: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}

    def measure(cell: dict[str, Any]) -> dict[str, Any]:
        kind, seed, name = cell["noise"], cell["seed"], cell["method"]
        level = noises[kind]
        (tn, tc), floor = tests[kind], psnr(*tests[kind])
        if (kind, seed) not in train:                                    # one noisy training set per noise and seed
            train.clear()
            train[(kind, seed)] = noisy_pairs(x_train, kind, level, seed=seed, copies=copies)
        xn, xc = train[(kind, seed)]
        common.seed_everything(seed)
        model = build(name, {"kind": kind, "level": level}, seed)
        fit = model.fit(xn, xc, time_budget=budget) if name in TRAINED else model.fit(xn, xc)
        value = psnr(np.clip(model.predict(tn), 0.0, 1.0), tc)
        return {"noise": kind, "level": level, "method": name, "seed": seed,
                "budget_s": budget if name in TRAINED else 0.0, "train_seconds": fit.seconds,
                "steps": fit.steps, "psnr": value, "noisy_psnr": floor, "gain_db": value - floor}

    return common.run_grid(common.grid(noise=list(noises), seed=seeds, method=names), measure, "denoising",
                           show_progress, note=lambda r: f"{r['noise']} {r['method']}: {r['psnr']:.2f} dB")


@common.command
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--budget", type=click.FloatRange(min=0.01), default=None,
              help="Seconds of training per trained method, noise and seed. Default 10.")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Default 3.")
@click.option("--train-images", type=click.IntRange(min=10), default=None, help="Clean training images. Default 10000.")
@click.option("--copies", type=click.IntRange(min=1), default=2, show_default=True,
              help="Noisy copies of each training image.")
@click.option("--eval-size", type=click.IntRange(min=1), default=None, help="Test images scored. Default 1000.")
@click.option("--methods", "methods_text", default=None, help=f"Comma-separated, some of {', '.join(METHODS)}.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke test: bundled subset, tiny budget, 1 seed.")
@click.option("--no-progress", is_flag=True)
def main(json_path: Optional[Path], budget: Optional[float], seeds: Optional[int], train_images: Optional[int],
         copies: int, eval_size: Optional[int], methods_text: Optional[str], threads: int, quick: bool,
         no_progress: bool) -> None:
    """Zor vs backprop vs the median filter on denoising Fashion-MNIST."""
    common.check_json_folder(json_path)
    names = common.parse_methods(methods_text, list(METHODS))
    common.set_threads(threads)
    budget = budget if budget is not None else (0.2 if quick else 10.0)
    n_seeds = seeds or (1 if quick else 3)
    data = common.load_images(bundled=quick)
    x_train = data["train"][0][: train_images or (200 if quick else 10000)]
    x_test = data["test"][0][: eval_size or (200 if quick else 1000)]
    env = common.environment(threads)
    click.echo(f"data: {data['source']}: {len(x_train):,} clean training images x {copies} noisy copies; "
               f"{len(x_test):,} unseen test images with fixed noise; {threads} thread(s); {env['cpu']}")
    click.echo(f"equal wall time: {budget:g} s per trained method, noise and seed")
    rows = run(x_train, x_test, NOISE_LEVELS, names, list(range(n_seeds)), budget, copies,
               show_progress=not no_progress)
    summary = common.summarise(rows, ("noise", "method"), ("psnr", "gain_db", "steps", "train_seconds"),
                               first=("level", "noisy_psnr"))
    click.echo(f"\nDenoising Fashion-MNIST, PSNR dB on unseen test images (median of {n_seeds} seed(s))")
    click.echo(common.format_table(summary, ["noise", "level", "method", "psnr", "gain_db", "steps", "train_seconds"],
                                   ["noise", "level", "method", "PSNR dB", "gain dB", "steps", "train s"]))
    if json_path is not None:
        common.write_json(json_path, {
            "benchmark": "denoising", "environment": env,
            "config": {"budget_s": budget, "seeds": n_seeds, "noises": NOISE_LEVELS, "copies": copies,
                       "train_images": len(x_train), "eval_images": len(x_test), "data": data["source"],
                       "methods": names, "hidden": HIDDEN, "quick": quick},
            "rows": rows, "summary": summary})
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
