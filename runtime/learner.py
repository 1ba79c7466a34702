"""Learning on the device: run a ``--learnable`` export's step graph with onnxruntime alone.

A learnable file (``zor-export --learnable``, :mod:`zor.export.learnable`) holds one
Zor learning step as a graph, ``(x, target, state) → (output, error, state_out)``, and
the start state as its initializers. The Learner keeps the state in two sets of buffers
bound to the onnxruntime session (IO binding): step k reads set k mod 2 and writes the
other set in place, so no weight is copied or allocated per step:

    error, state ← step_graph(x, target, state)          error = target − output  (B, n_L)

``fit`` draws each batch with the engine's curriculum sampler (zor.common.curriculum):
a sample's recent mean |error| makes it come back more often. A step whose new state is
not finite is refused: the state stays the last good one and LearningDivergedError says
so. Needs numpy and onnxruntime only (no torch, no onnx).

Example:
    >>> from zor.runtime import Learner                         # doctest: +SKIP
    >>> lr = Learner("model-learn.onnx")                        # doctest: +SKIP
    >>> lr.fit(x, y, steps=500, batch_size=10)                  # doctest: +SKIP
    >>> lr.save_state("session.npz")                            # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import onnxruntime as ort

from zor.common import moments
from zor.common.curriculum import CurriculumSampler
from zor.common.errors import (
    LearningDivergedError,
    ModelFileError,
    ShapeError,
    StateError,
)
from zor.common.fileio import atomic_path, check_not_an_input, write_bytes_atomic

from . import learner_file, learner_forms, learner_state, saved_model
from .checks import check_array
from .learner_file import LEARNABLE_FORMAT

__all__ = ["Learner", "LEARNABLE_FORMAT"]

FLUSH_EVERY = 64    # steps between two flushes of tiny moments (Learner._flush; 270 µs at 784-256-10, 4 µs a step)
TINY = 1e-34        # |a| below this in a moment or trace is set to 0: 0.9⁶⁴·TINY stays above float32's
                    #   subnormals (1.18e-38)
PathLike = Union[str, os.PathLike]


def _finite(a: np.ndarray) -> bool:
    """Whether every element of the float array is finite: max and min propagate NaN and show ±inf.
    Two SIMD reductions in numpy itself (8 µs at 48 × 784; numpy's pairwise sum takes 20 µs); a BLAS dot
    (checks.all_finite) may wake BLAS threads each step, which cost 60 µs a step on a busy 2-core machine."""
    return a.size == 0 or (math.isfinite(a.max()) and math.isfinite(a.min()))


def _ready(a: Any, width: int, finite: bool = True) -> bool:
    """The common call: already a C-contiguous float32 (B ≥ 1, width) array, nothing to convert; and finite,
    unless ``finite`` is False (the step's health covers it: see Learner._run)."""
    return (type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 2 and a.shape[1] == width
            and a.shape[0] > 0 and a.flags.c_contiguous and (not finite or _finite(a)))


def _data_key(x: np.ndarray, y: np.ndarray) -> str:
    """SHA-256 of the training set (shapes and bytes of x and y): a saved curriculum continues only on it."""
    h = hashlib.sha256(f"{x.shape}|{y.shape}|".encode())
    h.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    h.update(memoryview(np.ascontiguousarray(y)).cast("B"))
    return h.hexdigest()


class Learner:
    """The learning session of one learnable file: ``step``, ``fit``, ``save_state``, ``load_state``."""

    def __init__(self, path: PathLike, threads: Optional[int] = 1, seed: Optional[int] = 0) -> None:
        self.path = os.fspath(path)
        data, self.meta, self.spec = learner_file.read(path)
        self.model_hash = hashlib.sha256(data).hexdigest()
        self.names: list[str] = list(self.spec["state"])
        self.sizes: list[int] = [int(n) for n in self.spec["sizes"]]
        start = learner_file.start_state(self.path, data, self.names)
        learner_file.check_finite(start, f"{path}: start state", ModelFileError)
        learner_file.check_blocks(self.spec.get("blocks", []), start, path)
        self._turned = learner_file.check_turned(self.spec.get("transposed", []), start, self.sizes, path)
        self._scaling = learner_file.check_scaling(self.spec.get("moment_scaling"), self.spec, self.names, path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3          # the state inputs carry defaults on purpose: no warning for them
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
            self._bound = learner_state.BoundState(self._session, start, self.spec.get("blocks", []))
        except Exception as exc:    # onnxruntime raises its own classes for a bad graph
            raise ModelFileError(f"{path}: onnxruntime refused the step graph ({exc})") from exc
        self._forms = learner_forms.Forms(self.meta, self.spec, opts, self._bound, path)   # masked file: 2 graphs
        # the new weights checked by a pass over them: all without the graph's health output, else
        # those of layers without a norm clip (health covers the others: see _run)
        self._weights = [n for n in self.names if n.startswith("weight_") and (
            self._bound.health is None or self.spec["layers"][int(n.rsplit("_", 1)[1])]["max_update_norm"] is None)]
        self._decaying = [n for n in self.names if n.startswith(("adam_m_", "adam_v_", "momentum_", "novelty_", "rate_"))]
        # x's NaN and inf make the step's health not finite (0·Σx in it): then x is checked, not before
        self._x_in_health = bool(self.spec.get("health_covers_x")) and self._bound.health is not None
        self._flush_every = min(FLUSH_EVERY, self._scaling["every"]) if self._scaling else FLUSH_EVERY
        self._scratch: Optional[tuple[np.ndarray, np.ndarray]] = None     # _flush's |a| and |a| < TINY
        self.rng = np.random.default_rng(seed)
        self.steps_done = 0
        self._sampler: Optional[CurriculumSampler] = None
        self._sampler_data: Optional[str] = None          # _data_key of the data the sampler has seen

    @property
    def state(self) -> dict[str, np.ndarray]:
        """Every state tensor as it is now (copies: the session's own buffers are rewritten each step); W_i and
        its moments as (n_i, n_{i+1}) also where the graph holds them transposed (spec["transposed"]); Adam's
        moments at scale 1 (moment_steps 0) where the graph holds them scaled (zor.common.moments)."""
        return moments.from_graph(self._file_state(), self._scaling)

    def _file_state(self) -> dict[str, np.ndarray]:
        """The state as the graph holds it (scaled moments as they are) in the file's layout, W_i (n_i, n_{i+1})."""
        return {n: np.ascontiguousarray(v.T) if n in self._turned else v.copy() for n, v in self._bound.live.items()}

    @property
    def weights(self) -> list[np.ndarray]:
        """W_i (n_i, n_{i+1}) as they are now (copies)."""
        state = self.state
        return [state[f"weight_{i}"] for i in range(len(self.sizes) - 1)]

    def _checked(self, x: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
        """(x, target) as the step takes them, or the error naming what was expected; NaN and inf are found by
        the step itself where its health covers them (see _run), else here."""
        finite = not self._x_in_health
        if not _ready(x, self.sizes[0], finite):
            x = check_array("x", x, self.sizes[0])                # converts, or says what was expected
        if not _ready(target, self.sizes[-1], finite):
            target = check_array("target", target, self.sizes[-1])
        if target.shape[0] != x.shape[0]:
            raise ShapeError(f"target: expected shape ({x.shape[0]}, {self.sizes[-1]}), got {target.shape}")
        return x, target

    def _run(self, x: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One step; the new state is taken only when finite. health = mean|δ| + Σ‖grad_i‖² (layers with a
        norm clip) is finite iff the error and those gradients are; from a finite state (checked at load)
        a finite gradient gives finite moments and weights, so no pass over those weights is needed."""
        out, err, new = self._bound.run(self._session, x, target, self._forms.form)
        h = self._bound.health
        bad = [n for n in self._weights if not _finite(new[n])]        # θ may be −inf: weights decide
        if h is None or not math.isfinite(float(h)):      # a finite health holds a finite mean|δ|: δ is finite
            if self._x_in_health:                         # 0·Σx and mean|target − y| are in it: name a bad input
                check_array("x", x, self.sizes[0])
                check_array("target", target, self.sizes[-1])
            bad = bad or (["error"] if not _finite(err) else [] if h is None else ["gradients"])
        if bad:
            raise LearningDivergedError(
                f"learning diverged at step {self.steps_done + 1}: non-finite values in {bad}; "
                f"the step was refused and the last good state ({self.steps_done} steps) kept")
        self._bound.switch()
        self.steps_done += 1
        self._forms.choose(self._bound, self.steps_done)
        if self.steps_done % self._flush_every == 0:
            self._flush()
        return out, err

    def _flush(self) -> None:
        """Set |a| < TINY to 0 in the decaying state (optimiser moments, novelty traces, firing rates).

        A moment of a unit that stopped learning decays by β₁ = 0.9 a step into float32's subnormal
        range (below 1.18e-38), where every arithmetic pass over it runs several times slower (784-256-10
        on one batch: 1.5 → 7 ms a step after 1,000 steps); onnxruntime's denormals-as-zero option
        reaches the calling thread only when its session is the process's first. Every FLUSH_EVERY
        = 64 steps, values below TINY = 1e-34 are zeroed: 0.9⁶⁴·1e-34 = 1.2e-37 > 1.18e-38, so none turns
        subnormal in between. It changes nothing that counts: Adam's step m/(√v/k + eps'/k) for a zeroed
        |m| < 1e-34 moves W by < 1e-34·lr/(eps·(1 − β₁)) = lr·1e-25; a zeroed v changes √v by < 1e-17,
        far below the denominator's floor eps' = eps·√(1 − β₂ᵗ) ≥ 3e-10 (β₂ = 0.999); a momentum buffer
        or novelty trace or a silent unit's rate changes by < 1e-34 (torch keeps the subnormals; no more).

        Scaled moments (zor.common.moments) are put back to scale 1 first: in the graph a silent unit's m̃
        stays as it is, so it is here, at most every EVERY steps, that its m = m̃ β₁^τ falls, by ≥ 0.9⁶⁴."""
        live = self._bound.live
        if self._scaling is not None:
            moments.rescale(live, self._scaling)
        if self._scratch is None:                   # kept: new temporaries of this size cost page faults
            size = max(live[n].size for n in self._decaying)
            self._scratch = (np.empty(size, np.float32), np.empty(size, bool))
        for n in self._decaying:
            a = live[n].reshape(-1)
            mag, tiny = self._scratch[0][:a.size], self._scratch[1][:a.size]
            np.less(np.abs(a, out=mag), TINY, out=tiny)
            np.copyto(a, 0.0, where=tiny)

    def step(self, x: Any, target: Any) -> np.ndarray:
        """One learning step on the batch (B, n_0) with its target (B, n_L); returns the error (B, n_L)."""
        x, target = self._checked(x, target)
        return self._run(x, target)[1].copy()                      # the bound buffer is rewritten two steps on

    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """The output (B, n_L) for x with the current weights; learns nothing (the new state is dropped)."""
        x = check_array("x", x, self.sizes[0])
        outs = []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size]
            zeros = np.zeros((xb.shape[0], self.sizes[-1]), np.float32)
            feeds = learner_state.feeds(self._bound.blocks, self._bound.live)
            outs.append(self._session.run(["output"], {"x": xb, "target": zeros, **feeds})[0])
        return np.concatenate(outs)

    def _curriculum(self, x: np.ndarray, y: np.ndarray, enabled: bool) -> tuple[CurriculumSampler, bool]:
        """(sampler, continued): the session's sampler when it was drawing from this very data, else a new one."""
        key = _data_key(x, y)
        s = self._sampler
        if s is not None and self._sampler_data == key and s.enabled == enabled and s.n == x.shape[0]:
            return s, True
        self._sampler = CurriculumSampler(x.shape[0], rng=self.rng, enabled=enabled)
        self._sampler_data = key
        return self._sampler, False

    def fit(self, x: Any, y: Any = None, steps: int = 500, batch_size: int = 48,
            time_budget: Optional[float] = None, progress: bool = True, curriculum: bool = True) -> dict:
        """Learn (x, y) (y None: x, an autoencoder) for ``steps`` curriculum batches, or until
        ``time_budget`` seconds have passed. Returns {"steps", "train_accuracy" (100·(1 − mean|error|)),
        "curriculum" ("continued" or "new")}.

        Fitting the same (x, y) again continues the session's curriculum (also after load_state), so
        fit(k steps) then fit(n − k steps) draws the batches of one fit(n steps)."""
        x = check_array("x", x, self.sizes[0])
        y = x if y is None else check_array("y", y, self.sizes[-1])
        if y.shape[0] != x.shape[0]:
            raise ShapeError(f"y: expected {x.shape[0]} rows (one per row of x), got {y.shape[0]}")
        sampler, continued = self._curriculum(x, y, curriculum)
        xb = np.empty((batch_size, self.sizes[0]), np.float32)        # (B, n_0): the batch, gathered in place
        yb = xb if y is x else np.empty((batch_size, self.sizes[-1]), np.float32)
        bar = _Progress(steps) if progress else None
        acc: list[float] = []
        start = time.perf_counter()
        for _ in range(steps):
            idx = sampler.sample(batch_size)
            np.take(x, idx, axis=0, out=xb)                             # into buffers bound once (BoundState.run)
            if yb is not xb:
                np.take(y, idx, axis=0, out=yb)
            err = self._run(xb, yb)[1]
            per = np.abs(err).mean(axis=1)                              # (B,)
            sampler.update(idx, per)
            acc.append(100.0 * (1.0 - float(per.mean())))
            if bar is not None:
                bar.update(acc[-1])
            if time_budget is not None and time.perf_counter() - start >= time_budget:
                break
        if bar is not None:
            bar.close()
        return {"steps": len(acc), "train_accuracy": acc, "curriculum": "continued" if continued else "new"}

    def save(self, path: PathLike, check_rows: int = 8) -> None:
        """Write the current weights as an ordinary inference model (the file zor-export writes), checked
        first: the step graph's output and the new file's (zor.runtime.Model) on ``check_rows`` inputs
        must agree within 1e-4 (relative), else nothing is switched in (VerificationFailed: ModelFileError)."""
        data = saved_model.build(self)
        check_not_an_input(path, [self.path], "output")
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
            saved_model.check(self, tmp, check_rows)

    def _session_state(self) -> learner_state.Session:
        sampler = None
        if self._sampler is not None:
            sampler = dict(self._sampler.get_state(), data=self._sampler_data)
        # the file holds W_i as (n_i, n_{i+1}) and the moments as the graph does (scaled: zor.common.moments)
        live = self._bound.live if not self._turned else self._file_state()
        return learner_state.Session(live, self.steps_done, self.rng.bit_generator.state, sampler)

    def save_state(self, path: PathLike) -> None:
        """Write the session atomically: every state tensor, the step count, the rng and the curriculum
        sampler, tied to this model's hash (a resumed fit draws what an uninterrupted one would)."""
        session = self._session_state()
        write_bytes_atomic(path, learner_state.dump_state(session.state, self.model_hash, session))

    def load_state(self, path: PathLike) -> None:
        """Continue the session saved at ``path``; StateError for another model's or a damaged file
        (then nothing of the session changes)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise StateError(f"learner state {path}: cannot read it ({exc})") from exc
        expected = {n: (v.shape[::-1] if n in self._turned else v.shape, v.dtype)     # W_i as (n_i, n_{i+1})
                    for n, v in self._bound.live.items()}
        s = learner_state.parse_state(data, self.model_hash, expected)
        rng, sampler = self.rng, None
        try:
            if s.rng is not None:
                rng = np.random.default_rng()
                rng.bit_generator.state = s.rng
            if s.sampler is not None:
                n = int(s.sampler["n"])
                if n != len(s.sampler["error"]):
                    raise ValueError(f"n = {n} but {len(s.sampler['error'])} sample errors")
                sampler = CurriculumSampler(n, rng=rng)
                sampler.set_state(s.sampler)
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"learner state {path}: the rng or curriculum state does not fit ({exc})") from exc
        learner_file.check_finite(s.state, f"learner state {path}", StateError)
        if self._scaling is not None:             # τ as a Learner leaves it: a count of steps, at most `every`
            tau = float(s.state[moments.STATE])
            if not (0.0 <= tau <= self._scaling["every"] and tau == int(tau)):
                raise StateError(f"learner state {path}: {moments.STATE}: expected a whole number of steps in "
                                 f"[0, {self._scaling['every']}], got {tau:g}")
        self._bound.load({n: v.T if n in self._turned else v for n, v in s.state.items()})
        self.rng, self.steps_done = rng, s.steps_done
        self._sampler, self._sampler_data = sampler, (s.sampler or {}).get("data")


class _Progress:
    """tqdm when installed, else one line on stderr redrawn every few percent."""

    def __init__(self, total: int) -> None:
        self.total, self.n = total, 0
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc="learning", leave=False)
        except ImportError:
            self._bar = None

    def update(self, acc: float) -> None:
        self.n += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(acc=f"{acc:.1f}%")
        elif self.n == self.total or self.n % max(1, self.total // 20) == 0:
            sys.stderr.write(f"\rlearning {self.n}/{self.total}  acc {acc:.1f}%")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
