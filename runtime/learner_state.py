"""A learning session's state, in memory and on disk, for :class:`~zor.runtime.learner.Learner`.

In memory (:class:`BoundState`): two sets of numpy buffers bound to the onnxruntime session
(IO binding); step k reads set k mod 2 and writes the other in place.

On disk (``save_state`` / ``load_state``):

File: an ``.npz`` (numpy's zip of ``.npy`` arrays, written without pickle and read with
``allow_pickle=False``) holding every state tensor of the step graph (weights, θ, rates,
optimiser moments, step count, novelty traces) as ``s_0, s_1, ...``, the curriculum
sampler's arrays as ``c_error, c_weight, c_block_sum`` (when ``fit`` has run), and
``__header__``: UTF-8 JSON as uint8,

    {"format": "zor-learner-state", "version": 2, "model": SHA-256 of the learnable file,
     "names": [...], "session": {"steps_done": N, "rng": numpy bit-generator state,
                                 "sampler": sampler settings + "data" (SHA-256 of x, y) or null},
     "digest": SHA-256 over name, dtype, shape and bytes of every tensor in order, then the
               JSON of {"names", "session"} (sorted keys)}

so a resumed ``fit`` draws the batches an uninterrupted one would have drawn. A version 1
file (tensors only, no session) still loads; its sampler starts afresh.

A file of another model (other ``model`` hash), a truncated one (not a readable zip) or
a tampered one (``digest`` differs; names, dtypes or shapes not the model's) is refused
with a StateError naming what was expected; nothing of the session changes then.

Example:
    >>> import numpy as np
    >>> data = dump_state({"w": np.ones((2, 2), np.float32)}, "ab" * 32)
    >>> float(parse_state(data, "ab" * 32, {"w": ((2, 2), "float32")}).state["w"].sum())
    4.0
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import onnxruntime as ort

from zor.common.errors import StateError

__all__ = ["STATE_FORMAT", "SAMPLER_ARRAYS", "BoundState", "Session", "feeds", "dump_state", "parse_state",
           "state_digest"]

STATE_FORMAT = "zor-learner-state"
VERSION = 2
SAMPLER_ARRAYS = ("error", "weight", "block_sum")     # CurriculumSampler.get_state's arrays, stored as c_*


@dataclass
class Session:
    """What a state file holds: the step graph's tensors and the session around them."""

    state: dict                                # name → array, the step graph's state in graph order
    steps_done: int = 0                        # Learner.steps_done
    rng: Optional[dict] = None                 # numpy bit-generator state of the learner's rng
    sampler: Optional[dict] = None             # CurriculumSampler.get_state() plus "data", or None
    version: int = VERSION                     # the file's format version


class BoundState:
    """The state in two sets of buffers bound to the session (onnxruntime IO binding): a step reads
    set k and writes set 1 − k, which becomes the state only when it is finite. No state tensor is
    copied or allocated per step; only x, target, output and error are bound anew. A tensor the graph
    takes in row blocks (``blocks``: the learnable spec's list) is bound as row views of its buffer.
    A second session of the same inputs and outputs (a masked file's every-unit graph) binds the same
    buffers (:meth:`add`); ``run(..., form=1)`` steps through it."""

    def __init__(self, session: ort.InferenceSession, start: dict[str, np.ndarray], blocks: list = ()) -> None:
        self.sets = [{n: np.array(v, np.float32, order="C") for n, v in start.items()},
                     {n: np.empty_like(v) for n, v in start.items()}]
        outputs = {o.name for o in session.get_outputs()}
        self.blocks = list(blocks)
        self.health = np.zeros((), np.float32) if "health" in outputs else None   # older files lack it
        self.forms: list[dict] = []
        self.add(session)
        self.cur = 0

    def add(self, session: ort.InferenceSession) -> int:
        """Bind ``session`` (the same inputs and outputs) to the same two sets; returns its form number."""
        bindings = []
        for src, dst in ((0, 1), (1, 0)):
            b = session.io_binding()
            for n, v in feeds(self.blocks, self.sets[src]).items():
                b.bind_ortvalue_input(n, ort.OrtValue.ortvalue_from_numpy(v))
            for n, v in _outputs(self.blocks, self.sets[dst]).items():
                b.bind_ortvalue_output(n, ort.OrtValue.ortvalue_from_numpy(v))
            if self.health is not None:
                b.bind_ortvalue_output("health", ort.OrtValue.ortvalue_from_numpy(self.health))
            bindings.append(b)
        # per binding: its (output, error) buffers (B, n_L), or None before the first step of that batch size;
        # the (x, target) arrays bound to it last (kept alive, so the same objects mean the same memory)
        self.forms.append({"session": session, "bindings": bindings, "io": [None, None], "xt": [None, None]})
        return len(self.forms) - 1

    def run(self, session: ort.InferenceSession, x: np.ndarray, target: np.ndarray, form: int = 0) -> tuple:
        """Run one step into the other set; returns (output, error, new state) without switching. The output
        and error are buffers reused two steps on (a caller that keeps the error copies it; binding a new array
        each step measured no faster). ``form``: the bound session to run (0: ``session``, the one given first)."""
        k, f = self.cur, self.forms[form]
        b = f["bindings"][k]
        io = f["io"][k]
        if io is None or io[0].shape != target.shape:
            io = f["io"][k] = (np.empty_like(target), np.empty_like(target))
            b.bind_ortvalue_output("output", ort.OrtValue.ortvalue_from_numpy(io[0]))
            b.bind_ortvalue_output("error", ort.OrtValue.ortvalue_from_numpy(io[1]))
        xt = f["xt"][k]
        if xt is None or xt[0] is not x or xt[1] is not target:          # a binding reads the array's memory
            b.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(x))   # when it runs: the same arrays
            b.bind_ortvalue_input("target", ort.OrtValue.ortvalue_from_numpy(target))    # need no new binding
            f["xt"][k] = (x, target)
        (session if form == 0 else f["session"]).run_with_iobinding(b)
        return io[0], io[1], self.sets[1 - k]

    def switch(self) -> None:
        self.cur = 1 - self.cur

    @property
    def live(self) -> dict[str, np.ndarray]:
        return self.sets[self.cur]

    def load(self, state: dict[str, np.ndarray]) -> None:
        for n, v in state.items():
            np.copyto(self.sets[self.cur][n], v)


def feeds(blocks: list, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state as the step graph's inputs: a tensor in row blocks as one view per block (and W_i whole too,
    which the products read); ``blocks`` is the spec's list of {"state", "rows", "input", "output"}."""
    split = {b["state"] for b in blocks}
    out = {n: v for n, v in state.items() if n not in split or n.startswith("weight_")}
    out.update({b["input"]: state[b["state"]][b["rows"][0]:b["rows"][1]] for b in blocks})
    return out


def _outputs(blocks: list, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The buffers the state outputs are written into: ``NAME_out``, or one row view per block."""
    split = {b["state"] for b in blocks}
    out = {f"{n}_out": v for n, v in state.items() if n not in split}
    out.update({b["output"]: state[b["state"]][b["rows"][0]:b["rows"][1]] for b in blocks})
    return out


def state_digest(state: Mapping[str, np.ndarray], session: Optional[dict] = None) -> str:
    """SHA-256 over name, dtype, shape and bytes of every tensor, in order, then the session JSON."""
    h = hashlib.sha256()
    for name, value in state.items():
        h.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    if session is not None:
        h.update(json.dumps(session, sort_keys=True).encode())
    return h.hexdigest()


def _split(s: Session) -> tuple[dict, dict]:
    """(the session JSON, the sampler's arrays as c_* tensors)."""
    arrays: dict = {}
    sampler = None
    if s.sampler is not None:
        sampler = {k: v for k, v in s.sampler.items() if k not in SAMPLER_ARRAYS}
        arrays = {f"c_{k}": np.asarray(s.sampler[k], np.float64) for k in SAMPLER_ARRAYS}
    return {"steps_done": int(s.steps_done), "rng": s.rng, "sampler": sampler}, arrays


def dump_state(state: Mapping[str, np.ndarray], model_hash: str, session: Optional[Session] = None) -> bytes:
    """The bytes of a state file for the learnable model with SHA-256 ``model_hash``."""
    meta, arrays = _split(session or Session(dict(state)))
    tensors = {f"s_{i}": np.asarray(v) for i, v in enumerate(state.values())}
    tensors.update(arrays)
    header = {"format": STATE_FORMAT, "version": VERSION, "model": model_hash, "names": list(state),
              "session": meta, "digest": state_digest(tensors, {"names": list(state), "session": meta})}
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **tensors)
    return buf.getvalue()


def _read(data: bytes) -> tuple[dict, dict]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            header = json.loads(bytes(z["__header__"]).decode())
            tensors = {k: z[k] for k in z.files if k != "__header__"}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError, TypeError, RuntimeError,
            NotImplementedError, struct.error, UnicodeDecodeError) as exc:   # RuntimeError: a flipped 'encrypted' flag
        raise StateError(f"learner state: expected a state file written by Learner.save_state, "
                         f"could not read it ({type(exc).__name__}: {exc}); truncated or not a state file") from exc
    if not isinstance(header, dict) or header.get("format") != STATE_FORMAT:
        got = header.get("format") if isinstance(header, dict) else type(header).__name__
        raise StateError(f"learner state: expected format {STATE_FORMAT!r}, got {got!r}")
    if header.get("version") not in (1, VERSION):
        raise StateError(f"learner state: expected format version 1 or {VERSION}, got {header.get('version')!r}")
    return header, tensors


def _session(header: dict, tensors: dict, state: dict) -> Session:
    meta = header.get("session") if header["version"] >= 2 else None
    if meta is None:
        return Session(state, version=header["version"])
    if not isinstance(meta, dict):
        raise StateError("learner state: the session entry is not a JSON object")
    sampler = meta.get("sampler")
    if sampler is not None:
        missing = [k for k in SAMPLER_ARRAYS if f"c_{k}" not in tensors]
        if not isinstance(sampler, dict) or missing:
            raise StateError(f"learner state: the curriculum sampler's arrays {missing} are missing")
        sampler = dict(sampler, **{k: tensors[f"c_{k}"] for k in SAMPLER_ARRAYS})
    steps = meta.get("steps_done", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise StateError(f"learner state: steps_done must be a count ≥ 0, got {steps!r}")
    return Session(state, steps, meta.get("rng"), sampler, header["version"])


def parse_state(data: bytes, model_hash: str, expected: Mapping[str, tuple]) -> Session:
    """The session held in ``data``, checked against the model (``expected``: name → (shape, dtype))."""
    header, tensors = _read(data)
    if header.get("model") != model_hash:
        raise StateError(f"learner state: belongs to another model (model SHA-256 {str(header.get('model'))[:12]}…, "
                         f"expected {model_hash[:12]}…)")
    names = header.get("names")
    if not isinstance(names, list) or any(f"s_{i}" not in tensors for i in range(len(names))):
        raise StateError("learner state: the tensor list does not match the tensors stored (tampered or damaged)")
    stored = {f"s_{i}": tensors[f"s_{i}"] for i in range(len(names))}
    stored.update({k: v for k, v in tensors.items() if k.startswith("c_")})
    if header["version"] >= 2:
        digest = state_digest(stored, {"names": names, "session": header.get("session")})
    else:                                                   # version 1: the tensors by name, no session
        digest = state_digest({n: tensors[f"s_{i}"] for i, n in enumerate(names)})
    if digest != header.get("digest"):
        raise StateError("learner state: the tensors do not match the digest recorded with them (tampered or damaged)")
    state = {n: tensors[f"s_{i}"] for i, n in enumerate(names)}
    if list(state) != list(expected):
        raise StateError(f"learner state: expected tensors {list(expected)}, got {list(state)}")
    for name, (shape, dtype) in expected.items():
        v = state[name]
        if tuple(v.shape) != tuple(shape) or v.dtype != np.dtype(dtype):
            raise StateError(f"learner state {name}: expected {dtype} {tuple(shape)}, got {v.dtype} {tuple(v.shape)}")
    return _session(header, tensors, state)

