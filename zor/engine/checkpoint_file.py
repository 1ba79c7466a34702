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
    train.*          float32/float64  a training run's state (sampler, weight average), with a
                                      ``training`` metadata entry: :mod:`zor.engine.resume`

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
from zor.common.errors import (
    CheckpointError,
    ConfigError,
    FormatVersionError,
    StateError,
)
from zor.common.fileio import write_bytes_atomic

from .config import ZorConfig
from .connections import connect
from .layer import Layer, check_layers, place_layers

__all__ = ["FORMAT", "FORMAT_VERSION", "Checkpoint", "save", "read", "restore", "read_config"]

FORMAT = "zor-checkpoint"
FORMAT_VERSION = 1


def save(model, path: Union[str, os.PathLike],
         training: Optional[tuple[dict[str, Any], dict[str, torch.Tensor]]] = None) -> None:
    """Write ``model`` to ``path`` atomically (see the module docstring); ``training`` = (JSON-able meta,
    ``train.*`` tensors) adds a training run's state (:mod:`zor.engine.resume`)."""
    from safetensors.torch import save as st_save

    if getattr(getattr(model, "reducer", None), "stale", False):   # zor.engine.sharded: rows held by other ranks
        raise StateError("save: this rank holds only its rows of the optimiser state (distributed, activations "
                         "exchange): call net.reducer.gather_state(net) on every rank first (fit does)")
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
    if training is not None:
        tensors.update(training[1])
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
    if training is not None:
        metadata["training"] = json.dumps(training[0])
    write_bytes_atomic(path, st_save(tensors, metadata=metadata))


def _open(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder, expected a .zor/.safetensors file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc.strerror or exc})") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: expected a safetensors checkpoint, got {len(data)} bytes (truncated or empty)")
    header_len = int.from_bytes(data[:8], "little")
    if header_len <= 0 or 8 + header_len > len(data):
        raise CheckpointError(f"{path}: not a Zor checkpoint (expected a safetensors header, "
                              f"got a header length of {header_len} in a {len(data)}-byte file)")
    header = _loads(data[8:8 + header_len], path, "the safetensors header", "not a Zor checkpoint")
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{path}: expected format {FORMAT!r} in the safetensors metadata, got {found!r} "
                              "(a foreign safetensors file?)")
    if not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: expected string values in the safetensors metadata")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise CheckpointError(f"{path}: bad format_version {meta.get('format_version')!r}: expected an integer "
                              f"1..{FORMAT_VERSION}") from None
    if version > FORMAT_VERSION:
        raise FormatVersionError(f"{path}: checkpoint format version {version} is newer than this engine reads "
                                 f"(≤ {FORMAT_VERSION}); upgrade zor-edge (engine {__version__})")
    if version < 1:
        raise CheckpointError(f"{path}: unknown checkpoint format version {version}: expected 1..{FORMAT_VERSION}")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, RuntimeError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupt tensor data ({exc})") from exc
    return meta, tensors


def _loads(text: Union[str, bytes], path: Path, what: str, prefix: str = "invalid config in checkpoint") -> Any:
    """JSON ``text`` parsed; malformed, non-UTF-8 or too deeply nested JSON is a CheckpointError naming ``what``."""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: {prefix} ({what} is not valid JSON: {exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: {prefix} ({what} is JSON nested too deeply to read: expected a "
                              "few levels)") from None


def _config(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The ``config`` entry as a dict with a ``layers`` list of dicts and a ``network`` dict."""
    if "config" not in meta:
        raise CheckpointError(f"{path}: invalid config in checkpoint (no 'config' entry in the metadata)")
    config = _loads(meta["config"], path, "config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: invalid config in checkpoint (expected a JSON object, "
                              f"got {type(config).__name__})")
    layers, network = config.get("layers"), config.get("network", {})
    if not isinstance(layers, list) or not all(isinstance(d, dict) for d in layers):
        raise CheckpointError(f"{path}: invalid config in checkpoint (expected 'layers' to be a list of objects, "
                              f"got {str(layers)[:60]!r})")
    if not isinstance(network, dict):
        raise CheckpointError(f"{path}: invalid config in checkpoint (expected 'network' to be an object, "
                              f"got {type(network).__name__})")
    if config.get("task") is not None and not isinstance(config["task"], dict):
        raise CheckpointError(f"{path}: invalid config in checkpoint (expected 'task' to be an object or null, "
                              f"got {type(config['task']).__name__})")
    return config


def read_config(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The JSON config and metadata of a checkpoint, without building a model."""
    path = Path(path)
    meta, _ = _open(path)
    return {**meta, "config": _config(path, meta)}


@dataclass
class Checkpoint:
    """A checkpoint file read and checked: what builds the network, and the tensors to put in it."""

    path: Path
    layers: list[Layer]
    config: ZorConfig                 # with the device asked for at load time
    task: Optional[dict]
    tensors: dict[str, torch.Tensor]
    optim_keys: dict[str, list[str]]  # weight index -> names of its optimizer state tensors
    training: Optional[dict] = None   # a training run's state (zor.engine.resume), when written by fit
    training_tensors: Optional[dict[str, torch.Tensor]] = None   # its train.* tensors


def read(path: Union[str, os.PathLike], device: str = "auto") -> Checkpoint:
    """Read a checkpoint's config and tensors, and check every tensor against the config.

    Every declared size is checked against the file's actual tensors before anything
    is built (a few-KB file cannot make the engine allocate gigabytes), and every
    tensor is checked for dtype, shape and finite values. Any fault: CheckpointError.
    """
    path = Path(path)
    meta, tensors = _open(path)
    config = _config(path, meta)
    try:
        layers = [Layer.from_dict(dict(d)) for d in config["layers"]]
        check_layers(layers)
        placed = place_layers(layers)
        net_cfg = dict(config.get("network", {}))
        net_cfg["device"] = device
        net_cfg["betas"] = tuple(net_cfg.get("betas", (0.9, 0.999)))
        net_config = ZorConfig(**net_cfg)
    except (KeyError, TypeError, ValueError, AttributeError, ConfigError) as exc:
        raise CheckpointError(f"{path}: invalid config in checkpoint ({exc})") from exc
    optim_keys = _loads(meta.get("optimizer_state", "{}"), path, "optimizer_state")
    if not isinstance(optim_keys, dict) or not all(
            isinstance(v, list) and all(isinstance(k, str) for k in v) for v in optim_keys.values()):
        raise CheckpointError(f"{path}: invalid config in checkpoint (expected optimizer_state to map each weight "
                              "index to a list of names)")
    training, train_tensors = _training(path, meta, tensors)
    _check_tensors(path, placed, tensors, optim_keys)
    return Checkpoint(path, layers, net_config, config.get("task"), tensors, optim_keys, training, train_tensors)


def _training(path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> tuple[Optional[dict], Optional[dict]]:
    """The training state (meta, train.* tensors) taken out of ``tensors``; (None, None) when absent.
    Each train.* tensor must be float32/float64 and finite except NaN in the sampler's error
    (unseen rows); zor.engine.resume checks their shapes against the run."""
    names = [k for k in tensors if k.startswith("train.")]
    if "training" not in meta:
        if names:
            raise CheckpointError(f"{path}: unexpected tensor {names[0]!r}: expected train.* tensors only with a "
                                  "'training' metadata entry")
        return None, None
    training = _loads(meta["training"], path, "training")
    if not isinstance(training, dict):
        raise CheckpointError(f"{path}: invalid training state (expected a JSON object, got "
                              f"{type(training).__name__})")
    out = {k: tensors.pop(k) for k in names}
    for name, t in out.items():
        if t.dtype not in (torch.float32, torch.float64):
            raise CheckpointError(f"{path}: tensor {name!r}: expected float32 or float64, got {t.dtype}")
        values = t[~torch.isnan(t)] if name == "train.sampler_error" else t
        if not bool(torch.isfinite(values).all()):
            raise CheckpointError(f"{path}: tensor {name!r} holds NaN/inf values: expected finite numbers")
    return training, out


def _expected(layers: list[Layer], optim_keys: dict[str, list[str]]) -> dict[str, tuple]:
    """Name → shape of every tensor a checkpoint of these (placed) layers must hold (state.* aside)."""
    shapes: dict[str, tuple] = {}
    for i, (pre, post) in enumerate(zip(layers[:-1], layers[1:])):
        w = tuple(connect(pre, post).weight_shape())
        shapes[f"weights.{i}"] = shapes[f"novelty.{i}"] = w
        for key in optim_keys.get(str(i), []):
            shapes[f"optim.{i}.{key}"] = () if key == "step" else w
    for i, layer in enumerate(layers):
        shapes[f"threshold.{i}"] = shapes[f"rate.{i}"] = tuple(layer.threshold_shape)
    return shapes


def _check_tensors(path: Path, layers: list[Layer], tensors: dict[str, torch.Tensor],
                   optim_keys: dict[str, list[str]]) -> None:
    """CheckpointError unless the tensors are exactly those the layers need: names, float32, shapes, finite."""
    unknown = sorted(set(optim_keys) - {str(i) for i in range(len(layers) - 1)})
    if unknown:
        raise CheckpointError(f"{path}: optimizer_state names weight(s) {unknown}: expected indices "
                              f"0..{len(layers) - 2}")
    shapes = _expected(layers, optim_keys)
    for name, shape in shapes.items():
        if name not in tensors:
            raise CheckpointError(f"{path}: missing tensor {name!r} (expected shape {shape})")
        _check(path, name, tensors[name], shape)
    for name in sorted(set(tensors) - set(shapes)):
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == "state" and parts[1].isdigit() and int(parts[1]) < len(layers):
            t, size = tensors[name], layers[int(parts[1])].size
            _check(path, name, t, (t.shape[0] if t.dim() == 2 and t.shape[0] > 0 else "B", size))
        else:
            raise CheckpointError(f"{path}: unexpected tensor {name!r}: expected only the tensors its config "
                                  "describes (weights, novelty, threshold, rate, state, optim)")


def _check(path: Path, name: str, t: torch.Tensor, shape: tuple) -> None:
    """CheckpointError unless ``t`` is float32 of ``shape`` with finite values (θ may be −inf, moments ≥ 0)."""
    if tuple(t.shape) != tuple(shape) or t.dtype != torch.float32:
        raise CheckpointError(f"{path}: tensor {name!r}: expected float32 {tuple(shape)}, "
                              f"got {t.dtype} {tuple(t.shape)}")
    minus_inf_ok = name.startswith("threshold.")      # a threshold of −inf is legal: the unit always spikes
    ok = ~torch.isnan(t) & (t != float("inf")) if minus_inf_ok else torch.isfinite(t)
    if not bool(ok.all()):
        n_nan = int(torch.isnan(t).sum())
        raise CheckpointError(f"{path}: tensor {name!r} holds NaN/inf values ({n_nan} NaN, {int((~ok).sum()) - n_nan} "
                              "infinite): expected finite numbers (a diverged training run?)")
    if (name.endswith(".step") or "exp_avg_sq" in name) and bool((t < 0).any()):
        raise CheckpointError(f"{path}: tensor {name!r} holds negative values: expected ≥ 0")


def _take(ckpt: Checkpoint, name: str, shape: tuple) -> torch.Tensor:
    """Tensor ``name`` of the checkpoint (already checked by :func:`read`), after a last shape check."""
    if name not in ckpt.tensors:
        raise CheckpointError(f"{ckpt.path}: missing tensor {name!r} (expected shape {shape})")
    t = ckpt.tensors[name]
    if tuple(t.shape) != tuple(shape) or t.dtype != torch.float32:
        raise CheckpointError(f"{ckpt.path}: tensor {name!r}: expected float32 {tuple(shape)}, "
                              f"got {t.dtype} {tuple(t.shape)}")
    return t


def restore(model, ckpt: Checkpoint):
    """Copy the checkpoint's tensors into ``model`` (built from ``ckpt.layers`` and ``ckpt.config``);
    :func:`read` has checked every one already. Returns the model."""
    with torch.no_grad():
        for i, w in enumerate(model.weights):
            w.copy_(_take(ckpt, f"weights.{i}", w.shape))
            model.novelty_trace(i).copy_(_take(ckpt, f"novelty.{i}", w.shape))
        state = []
        for i, layer in enumerate(model.layers):
            model.threshold(i).copy_(_take(ckpt, f"threshold.{i}", layer.threshold_shape))
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
