"""``zor-learn``: learn on the device from files, with onnxruntime alone, and write the adapted model.

    zor-learn MODEL-learn.onnx DATA -o adapted.onnx [--targets y.npy] [--steps 500]
              [--batch-size 48] [--time-budget S] [--state session.npz] [--seed 0] [--threads 1]

DATA is either

- a ``.npy`` float array x (N, n_0); targets from ``--targets`` (a float (N, n_L) array,
  or integer class labels (N,) made one-hot over the n_L outputs); without ``--targets``
  the model learns to reproduce x (an autoencoder, n_0 = n_L);
- a folder of ``.png`` images named ``LABEL_anything.png`` (LABEL an integer class
  < n_L, one-hot targets): each image, grey or colour (luma), scaled by 1/255 and
  flattened to n_0 values.

``--state``: continue the session saved there when the file exists, and save the session
there at the end (also when learning diverges: the last good state is kept and the
command ends with an error saying so, exit 2). The session holds the curriculum sampler and
its rng too, so a resumed run on the same data draws the batches an uninterrupted one would. The output is written only after the saved
model's forward pass matched the learner's (:mod:`zor.runtime.saved_model`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import click
import numpy as np

from zor.common.cli import cli_errors
from zor.common.errors import DataError, LearningDivergedError, ShapeError
from zor.common.fileio import check_output_file

from .learner import Learner
from .png import read_png

__all__ = ["main", "load_data"]

_LABEL = re.compile(r"^(\d+)_")


def _one_hot(labels: np.ndarray, width: int, where: str) -> np.ndarray:
    if labels.size and (labels.min() < 0 or labels.max() >= width):
        raise DataError(f"{where}: class labels must lie in [0, {width - 1}] (the model has {width} outputs), "
                        f"got {int(labels.min())}..{int(labels.max())}")
    out = np.zeros((labels.shape[0], width), np.float32)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1.0
    return out


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: expected a .npy array file, could not read it ({exc})") from None


def _folder(path: Path, learner: Learner) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise DataError(f"{path}: expected .png images named LABEL_name.png, found none")
    rows, labels = [], []
    for f in files:
        m = _LABEL.match(f.name)
        if m is None:
            raise DataError(f"{f}: expected a file name LABEL_name.png (LABEL an integer class)")
        img = read_png(f).astype(np.float32)
        if img.ndim == 3:
            img = img @ np.array([0.299, 0.587, 0.114], np.float32)
        if img.size != learner.sizes[0]:
            raise ShapeError(f"{f}: expected an image of {learner.sizes[0]} pixels, got {'x'.join(map(str, img.shape))}")
        rows.append(img.reshape(-1) / 255.0)
        labels.append(int(m.group(1)))
    return np.stack(rows).astype(np.float32), _one_hot(np.array(labels), learner.sizes[-1], str(path))


def load_data(data: Path, targets: Optional[Path], learner: Learner) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from DATA and --targets (see the module docstring)."""
    if data.is_dir():
        return _folder(data, learner)
    if data.suffix.lower() != ".npy":
        raise DataError(f"{data}: expected a .npy array or a folder of .png images, got {data.suffix or 'no suffix'!r}")
    x = _npy(data)
    if targets is None:
        if learner.sizes[0] != learner.sizes[-1]:
            raise DataError(f"{data}: the model maps {learner.sizes[0]} inputs to {learner.sizes[-1]} outputs: "
                            "pass --targets (a (N, n_L) array or class labels)")
        return x, x
    y = _npy(targets)
    if y.ndim == 1 and np.issubdtype(y.dtype, np.integer):
        y = _one_hot(y, learner.sizes[-1], str(targets))
    return x, y


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="the adapted inference model (.onnx)")
@click.option("--targets", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=".npy targets (N, n_L) or integer labels (N,)")
@click.option("--steps", type=click.IntRange(1), default=500, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=48, show_default=True)
@click.option("--time-budget", type=click.FloatRange(0, min_open=True), default=None, help="seconds")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="session file: resumed when it exists, written at the end")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@cli_errors
def main(model: Path, data: Path, output: Path, targets: Optional[Path], steps: int, batch_size: int,
         time_budget: Optional[float], state: Optional[Path], seed: int, threads: int) -> None:
    """Learn DATA on the device with MODEL (a zor-export --learnable file) and write the adapted model."""
    inputs = [model, data, targets, state]
    check_output_file(output, inputs)
    if state is not None:
        check_output_file(state, [model, data, targets])
    learner = Learner(model, threads=threads, seed=seed)
    x, y = load_data(data, targets, learner)
    if state is not None and state.exists():
        learner.load_state(state)
        click.echo(f"resumed the session in {state}", err=True)
    try:
        hist = learner.fit(x, y, steps=steps, batch_size=batch_size, time_budget=time_budget, progress=True)
    except LearningDivergedError as exc:
        if state is None:
            raise LearningDivergedError(f"{exc}; nothing written (pass --state FILE to keep the session)") from None
        learner.save_state(state)
        raise LearningDivergedError(f"{exc}; that state is saved in {state}, no model written") from None
    if state is not None:
        learner.save_state(state)
    learner.save(output)
    acc = hist["train_accuracy"][-1] if hist["train_accuracy"] else float("nan")
    if state is not None and hist["curriculum"] == "new" and learner.steps_done > hist["steps"]:
        click.echo("the curriculum started afresh: the saved one was drawing from other data", err=True)
    click.echo(f"learned {hist['steps']} steps (last batch {acc:.1f} %), wrote {output}")
