"""A learning session's state on disk: ``save_state`` / ``load_state`` for :class:`~zor.runtime.learner.Learner`.

File: an ``.npz`` (numpy's zip of ``.npy`` arrays, written without pickle and read with
``allow_pickle=False``) holding every state tensor of the step graph (weights, θ, rates,
optimiser moments, step count, novelty traces) and ``__header__``: UTF-8 JSON as uint8,

    {"format": "zor-learner-state", "version": 1, "model": SHA-256 of the learnable file,
     "names": [...], "digest": SHA-256 over name, dtype, shape and bytes of every tensor in order}

A file of another model (other ``model`` hash), a truncated one (not a readable zip) or
a tampered one (``digest`` differs; names, dtypes or shapes not the model's) is refused
with a StateError naming what was expected; nothing of the session changes then.

Example:
    >>> import io, numpy as np
    >>> data = dump_state({"w": np.ones((2, 2), np.float32)}, "ab" * 32)
    >>> parse_state(data, "ab" * 32, {"w": ((2, 2), "float32")})["w"].sum()
    4.0
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from typing import Mapping

import numpy as np

from zor.common.errors import StateError

__all__ = ["STATE_FORMAT", "dump_state", "parse_state", "state_digest"]

STATE_FORMAT = "zor-learner-state"


def state_digest(state: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over name, dtype, shape and bytes of every tensor, in order."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()


def dump_state(state: Mapping[str, np.ndarray], model_hash: str) -> bytes:
    """The bytes of a state file for the learnable model with SHA-256 ``model_hash``."""
    header = {"format": STATE_FORMAT, "version": 1, "model": model_hash, "names": list(state),
              "digest": state_digest(state)}
    buf = io.BytesIO()
    arrays = {f"s_{i}": np.asarray(v) for i, v in enumerate(state.values())}
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    return buf.getvalue()


def parse_state(data: bytes, model_hash: str, expected: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """The state held in ``data``, checked against the model (``expected``: name → (shape, dtype))."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z["__header__"]).decode())
            names = header["names"]
            state = {n: z[f"s_{i}"] for i, n in enumerate(names)}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, TypeError, RuntimeError,
            NotImplementedError, struct.error) as exc:     # RuntimeError: a flipped 'encrypted' flag
        raise StateError(f"learner state: expected a state file written by Learner.save_state, "
                         f"could not read it ({type(exc).__name__}: {exc}); truncated or not a state file") from exc
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        raise StateError(f"learner state: expected format {STATE_FORMAT!r}, got {header.get('format')!r}")
    if header.get("model") != model_hash:
        raise StateError(f"learner state: belongs to another model (model SHA-256 {str(header.get('model'))[:12]}…, "
                         f"expected {model_hash[:12]}…)")
    if state_digest(state) != header.get("digest"):
        raise StateError("learner state: the tensors do not match the digest recorded with them (tampered or damaged)")
    if list(state) != list(expected):
        raise StateError(f"learner state: expected tensors {list(expected)}, got {list(state)}")
    for name, (shape, dtype) in expected.items():
        v = state[name]
        if tuple(v.shape) != tuple(shape) or v.dtype != np.dtype(dtype):
            raise StateError(f"learner state {name}: expected {dtype} {tuple(shape)}, got {v.dtype} {tuple(v.shape)}")
    return state
