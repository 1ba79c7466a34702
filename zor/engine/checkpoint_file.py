"""The checkpoint file: one safetensors file holding tensors and a JSON config.

This module reads and writes the file and knows nothing of the network class:
:meth:`Zor.save <zor.engine.network.Zor.save>` and :meth:`Zor.load
<zor.engine.network.Zor.load>` call it (and :mod:`zor.engine.checkpoint` offers the
same as functions).

Layout (format version 1). Tensors, all float32 unless noted:

    weights.{i}      (n_i, n_{i+1})   forward weights W_i ((C_{i+1}, C_i, k, k) into a Conv)
    threshold.{i}    (n_i,)           per-unit thresholds θ_i ((C_i,) per channel for Conv)
    rate.{i}         (n_i,)           homeostasis firing-rate EMA r_i (same shape as θ_i)
    novelty.{i}      (n_i, n_{i+1})   novelty trace R_i
    state.{i}        (B, n_i)         charges a stateful layer carries (when present)
    optim.{i}.{key}  any              optimizer state of W_i (Adam moments, step, ...)

The safetensors header metadata (strings) carries ``format`` ("zor-checkpoint"),
``format_version``, ``engine_version`` and ``config`` (JSON: the layers and the
network settings). Loading parses the header and raw tensor bytes only: nothing is
ever unpickled. Saving is atomic.

Example:
    >>> import tempfile, os, torch
    >>> from zor import Zor, Layer
    >>> net = Zor([Layer(4), Layer(3)], seed=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "net.zor")
    >>> net.save(path)
    >>> torch.equal(Zor.load(path).weights[0], net.weights[0])
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import torch

from zor import __version__
from zor.common.errors import CheckpointError, ConfigError, FormatVersionError
from zor.common.fileio import write_bytes_atomic

from .config import ZorConfig
from .layer import Layer

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "save", "read", "restore", "read_config"]

FORMAT = "zor-checkpoint"
FORMAT_VERSION = 1


def save(model, path: Union[str, os.PathLike]) -> None:
    """Write ``model`` to ``path`` atomically (see the module docstring)."""
    from safetensors.torch import save as st_save

    tensors: dict[str, torch.Tensor] = {}
    for i, w in enumerate(model.weights):
        tensors[f"weights.{i}"] = w.detach()
        tensors[f"novelty.{i}"] = model.novelty_trace(i)
    for i in range(len(model.layers)):
        tensors[f"threshold.{i}"] = model.threshold(i)
        tensors[f"rate.{i}"] = model.rate(i)
        if model.state[i] is not None:
            tensors[f"state.{i}"] = model.state[i]
    optim_keys: dict[str, list[str]] = {}
    for i, w in enumerate(model.weights):
        st = model.optimizer.state.get(w, {})
        optim_keys[str(i)] = sorted(st)
        for key, value in st.items():
            tensors[f"optim.{i}.{key}"] = torch.as_tensor(value)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    config = {"layers": [layer.to_dict() for layer in model.layers], "network": model.config.to_dict(),
              "task": model.task}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "engine_version": __version__,
        "config": json.dumps(config),
        "optimizer_state": json.dumps(optim_keys),
    }
    write_bytes_atomic(path, st_save(tensors, metadata=metadata))


def _open(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, expected a .zor/.safetensors file")
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: expected a safetensors checkpoint, got {len(data)} bytes (truncated or empty)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"{path}: not a Zor checkpoint (expected a safetensors header, "
                              f"got a header length of {header_len} in a {len(data)}-byte file)")
    try:
        header = json.loads(data[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a Zor checkpoint (unreadable safetensors header: {exc})") from exc
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: expected format {FORMAT!r} in the safetensors metadata, got {found!r} "
                              "(a foreign safetensors file?)")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad format_version {meta.get('format_version')!r}") from exc
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{path}: checkpoint format version {version} is newer than this engine reads "
                                 f"(≤ {FORMAT_VERSION}); upgrade zor-edge (engine {__version__})")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt tensor data ({exc})") from exc
    return meta, tensors


def read_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The JSON config and metadata of a checkpoint, without building a model."""
    meta, _ = _open(Path(path))
    return {**meta, "config": json.loads(meta["config"])}


@dataclass
class Checkpoint:
    """A checkpoint file read and checked: what builds the network, and the tensors to put in it."""

    path: Path
    layers: list[Layer]
    config: ZorConfig                 # with the device asked for at load time
    task: Optional[dict]
    tensors: dict[str, torch.Tensor]
    optim_keys: dict[str, list[str]]  # weight index -> names of its optimizer state tensors


def read(path: Union[str, os.PathLike], device: str = "auto") -> Checkpoint:
    """Read a checkpoint's config and tensors; an invalid config raises CheckpointError."""
    path = Path(path)
    meta, tensors = _open(path)
    try:
        config = json.loads(meta["config"])
        layers = [Layer.from_dict(d) for d in config["layers"]]
        net_cfg = dict(config["network"])
        net_cfg["device"] = device
        net_cfg["betas"] = tuple(net_cfg.get("betas", (0.9, 0.999)))
        optim_keys = json.loads(meta.get("optimizer_state", "{}"))
        return Checkpoint(path, layers, ZorConfig(**net_cfg), config.get("task"), tensors, optim_keys)
    except (KeyError, TypeError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid config in checkpoint ({exc})") from exc


def _take(ckpt: Checkpoint, name: str, shape: tuple, allow_minus_inf: bool = False) -> torch.Tensor:
    """Tensor ``name`` of the checkpoint, checked: float32, ``shape``, no NaN/inf (−inf where allowed)."""
    if name not in ckpt.tensors:
        raise CheckpointError(f"{ckpt.path}: missing tensor {name!r} (expected shape {shape})")
    t = ckpt.tensors[name]
    if tuple(t.shape) != tuple(shape) or t.dtype != torch.float32:
        raise CheckpointError(f"{ckpt.path}: tensor {name!r}: expected float32 {tuple(shape)}, "
                              f"got {t.dtype} {tuple(t.shape)}")
    ok = ~torch.isnan(t) & (t != float("inf")) if allow_minus_inf else torch.isfinite(t)
    if not ok.all():
        raise CheckpointError(f"{ckpt.path}: tensor {name!r} holds NaN/inf values")
    return t


def restore(model, ckpt: Checkpoint):
    """Copy the checkpoint's tensors into ``model`` (built from ``ckpt.layers`` and ``ckpt.config``),
    validating every one; returns the model."""
    with torch.no_grad():
        for i, w in enumerate(model.weights):
            w.copy_(_take(ckpt, f"weights.{i}", w.shape))
            model.novelty_trace(i).copy_(_take(ckpt, f"novelty.{i}", w.shape))
        state = []
        for i, layer in enumerate(model.layers):
            # a threshold of −inf is legal: the unit always spikes (the output's default)
            model.threshold(i).copy_(_take(ckpt, f"threshold.{i}", layer.threshold_shape, allow_minus_inf=True))
            model.rate(i).copy_(_take(ckpt, f"rate.{i}", layer.threshold_shape))
            key = f"state.{i}"
            state.append(ckpt.tensors[key].to(model.device) if key in ckpt.tensors else None)
        model.set_state(state)
    for i, w in enumerate(model.weights):
        keys = ckpt.optim_keys.get(str(i), [])
        if keys:
            st = {}
            for key in keys:
                name = f"optim.{i}.{key}"
                if name not in ckpt.tensors:
                    raise CheckpointError(f"{ckpt.path}: missing optimizer tensor {name!r}")
                value = ckpt.tensors[name]
                st[key] = value if key == "step" else value.to(model.device)
            model.optimizer.state[w] = st
    return model
