"""The training state a checkpoint carries so that a stopped run continues as if never stopped.

A plain checkpoint (:mod:`zor.engine.checkpoint_file`) already holds what the network
is: W_i, θ_i, r_i (firing-rate EMAs), R_i (novelty traces), stateful charges and the
optimiser state (Adam moments m, v and the step t of every W_i). :meth:`Zor.fit` adds
what the run is, so that step k+1 after a resume draws the same batch and applies the
same update as step k+1 of an uninterrupted run:

    metadata ``training``     JSON: step k, global batch B, rows N, curriculum on/off,
                              the sampler's PCG64 state and whether it started, the
                              weight average's step count, the per-step training accuracy
    train.sampler_error       (N,)        float64   e_i, each row's error EMA (NaN: unseen)
    train.sampler_weight      (blocks·b,) float64   w_i = (e_i + ε)^α (0 for padding)
    train.sampler_block_sum   (blocks,)   float64   Σ w_i per block
    train.average.{i}         like W_i    float32   w̄_i of the weight average (when on)

Resuming checks the checkpoint against the run: layers and settings (device aside),
B, N and the curriculum must be equal, else a CheckpointError names each difference.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch

from zor.common.curriculum import CurriculumSampler
from zor.common.errors import CheckpointError

from . import checkpoint_file
from .averaging import WeightAverage

if TYPE_CHECKING:
    from .network import Zor
    from .training import History

__all__ = ["TrainingState", "save", "restore", "describe"]


@dataclass
class TrainingState:
    """What fit() keeps besides the network: the sampler, the weight average, the history."""

    sampler: CurriculumSampler
    average: Optional[WeightAverage]
    history: "History"
    batch_size: int
    curriculum: bool

    def run_settings(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "rows": self.sampler.n, "curriculum": self.curriculum}


def describe(net: "Zor") -> dict[str, Any]:
    """The network's configuration as compared on resume and across ranks (the device left out)."""
    network = net.config.to_dict()
    network.pop("device", None)
    return {"layers": [layer.to_dict() for layer in net.layers], "network": network}


def save(net: "Zor", path: Union[str, os.PathLike], state: TrainingState) -> None:
    """Write ``net`` and the training state to ``path`` atomically (the module docstring's layout)."""
    s = state.sampler
    meta = {**state.run_settings(), "step": state.history.steps,
            "sampler": {"started": bool(s._started), "rng": s.rng.bit_generator.state},
            "average_steps": state.average.steps if state.average is not None else None,
            "train_accuracy": list(state.history.train_accuracy)}
    tensors = {"train.sampler_error": torch.from_numpy(s.error.copy()),
               "train.sampler_weight": torch.from_numpy(s.weight.copy()),
               "train.sampler_block_sum": torch.from_numpy(s.block_sum.copy())}
    if state.average is not None:
        tensors.update({f"train.average.{i}": t for i, t in enumerate(state.average.sums)})
    checkpoint_file.save(net, path, training=(meta, tensors))


def restore(net: "Zor", path: Union[str, os.PathLike], state: TrainingState) -> int:
    """Load ``path`` into ``net`` and ``state`` when it exists; returns the step to continue from (0: fresh)."""
    if not os.path.exists(path):
        return 0
    ckpt = checkpoint_file.read(path, str(net.device))
    if ckpt.training is None:
        raise CheckpointError(f"{ckpt.path}: holds no training state (written by Zor.save, not by fit with a "
                              "checkpoint): expected a checkpoint fit(checkpoint=...) or zor.train wrote")
    _check_same(ckpt, net, state)
    checkpoint_file.restore(net, ckpt)
    meta, tensors = ckpt.training, ckpt.training_tensors
    _restore_sampler(ckpt.path, state.sampler, meta, tensors)
    if state.average is not None:
        for i, s in enumerate(state.average.sums):
            s.copy_(_tensor(ckpt.path, tensors, f"train.average.{i}", tuple(s.shape), torch.float32))
        state.average.steps = _int(ckpt.path, meta, "average_steps")
    step = _int(ckpt.path, meta, "step")
    acc = meta.get("train_accuracy")
    if not isinstance(acc, list) or len(acc) != step or not all(isinstance(a, (int, float)) for a in acc):
        raise CheckpointError(f"{ckpt.path}: training state: expected train_accuracy to list {step} numbers")
    state.history.train_accuracy[:] = [float(a) for a in acc]
    state.history.steps = step
    return step


def _check_same(ckpt: "checkpoint_file.Checkpoint", net: "Zor", state: TrainingState) -> None:
    """CheckpointError naming every setting where the checkpoint and this run differ."""
    network = ckpt.config.to_dict()
    network.pop("device", None)
    theirs = {"layers": [layer.to_dict() for layer in ckpt.layers], "network": network}
    ours = describe(net)
    diffs = [f"layer {i} {k}: checkpoint {a.get(k)!r}, this run {b.get(k)!r}"
             for i, (a, b) in enumerate(zip(theirs["layers"], ours["layers"]))
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if len(theirs["layers"]) != len(ours["layers"]):
        diffs.append(f"layer count: checkpoint {len(theirs['layers'])}, this run {len(ours['layers'])}")
    for key in sorted(set(theirs["network"]) | set(ours["network"])):
        a, b = theirs["network"].get(key), ours["network"].get(key)
        if a != b:
            diffs.append(f"{key}: checkpoint {a!r}, this run {b!r}")
    for key, value in state.run_settings().items():
        if ckpt.training.get(key) != value:
            diffs.append(f"{key}: checkpoint {ckpt.training.get(key)!r}, this run {value!r}")
    if diffs:
        raise CheckpointError(f"{ckpt.path}: cannot resume, the checkpoint is from a different configuration: "
                              + "; ".join(diffs))


def _restore_sampler(path: Any, s: CurriculumSampler, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
    s.error[:] = _tensor(path, tensors, "train.sampler_error", s.error.shape, torch.float64).numpy()
    s.weight[:] = _tensor(path, tensors, "train.sampler_weight", s.weight.shape, torch.float64).numpy()
    s.block_sum[:] = _tensor(path, tensors, "train.sampler_block_sum", s.block_sum.shape, torch.float64).numpy()
    if (s.weight < 0).any() or (s.block_sum < 0).any() or (s.error[~np.isnan(s.error)] < 0).any():
        raise CheckpointError(f"{path}: training state: the sampler's errors and weights must be ≥ 0")
    sampler = meta.get("sampler")
    if not isinstance(sampler, dict) or not isinstance(sampler.get("started"), bool):
        raise CheckpointError(f"{path}: training state: expected a 'sampler' object with 'started' and 'rng'")
    s._started = sampler["started"]
    try:
        s.rng.bit_generator.state = sampler.get("rng")
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: training state: the sampler's random state does not fit a "
                              f"{type(s.rng.bit_generator).__name__} generator ({exc})") from None


def _tensor(path: Any, tensors: dict[str, torch.Tensor], name: str, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
    t = tensors.get(name)
    if t is None:
        raise CheckpointError(f"{path}: training state: missing tensor {name!r} (expected {dtype} {tuple(shape)})")
    if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
        raise CheckpointError(f"{path}: training state: tensor {name!r}: expected {dtype} {tuple(shape)}, "
                              f"got {t.dtype} {tuple(t.shape)}")
    return t


def _int(path: Any, meta: dict, key: str) -> int:
    value = meta.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CheckpointError(f"{path}: training state: expected {key} to be an int ≥ 0, got {value!r}")
    return value

