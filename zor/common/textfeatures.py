"""The step framing of translation: a fixed-size input vector per target position.

A translation model here is a *step model*: it sees a fixed-size encoding of the
source sentence and of the recent target tokens, and scores every target token as
the next one. Decoding calls it once per target position (:mod:`zor.common.textdecode`).
This module is numpy-only: the engine builds training data with it and the torch-free
runtime builds the same vectors at run time.

For source ids x_0..x_{n-1}, target ids y_0..y_{m-1} and step t (predicting y_t,
or ``</s>`` at t = m), the input is the concatenation of five blocks:

    block      width              entries (all others 0)
    bag        V_s                x_j for every distinct source id: 1/sqrt(#distinct)
    window     window_dim         for o in −w..w: slot h(o, x_{p+o}) = 1, where
                                  p = floor(t / r) is the source position aligned to t
                                  (r: target tokens per source token, from training);
                                  positions outside the sentence use the ids −1 / −2
    history    k · V_t            block j (j = 1..k): y_{t−j} = 1 (``<s>`` before the start)
    position   P                  bucket of t (0, 1, 2, 3, 4–5, 6–7, 8–11, ...; last bucket open)
    progress   P                  bucket of t / (r·n): min(P−1, floor(P · t / (2 r n)))

    D = V_s + window_dim + k·V_t + 2P

h(o, x) = ((x + 3)·2654435761 + (o + w)·2246822519) mod 2³² mod window_dim: a
fixed integer hash, so every platform builds identical vectors.

Why this suits Zor: the input is non-negative and sparse, so the input layer's spike
gate (θ = 0) passes exactly the active features; the output is one charge per target
token trained against a one-hot target, which Zor's rule (error = target − output,
no autograd) handles like any reconstruction; and the aligned window gives a
stateless network a moving view of the source, which stands in for attention.

Example:
    >>> enc = StepEncoder(source_vocab=10, target_vocab=8, history=1, window=1, window_dim=16,
    ...                   length_ratio=1.0, position_buckets=4)
    >>> enc.width
    42
    >>> x = enc.rows([enc.source([4, 5])], [[2]], [0])      # step 0: history is <s>
    >>> sorted(np.flatnonzero(x[0]).tolist())[:2], round(float(x[0, 4]), 4)
    ([4, 5], 0.7071)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError, ModelFileError
from .tokenizer import BOS, check_spec_header

__all__ = ["StepEncoder", "SourceContext", "StepData", "position_bucket"]

_KIND = "zor-step"
_VERSION = 1
_H1, _H2 = 2654435761, 2246822519
_BEFORE, _AFTER = -1, -2      # ids of positions before / after the sentence in the window


def position_bucket(t: int, buckets: int) -> int:
    """0, 1, 2, 3 exactly, then two buckets per doubling (4–5, 6–7, 8–11, 12–15, ...), capped."""
    if t < 4:
        b = t
    else:
        e = int(math.log2(t))                     # t in [2^e, 2^(e+1))
        b = 4 + 2 * (e - 2) + (1 if t >= 3 * 2 ** (e - 1) else 0)
    return min(b, buckets - 1)


@dataclass(frozen=True)
class SourceContext:
    """A source sentence encoded once: its ids and its bag block (indices, value)."""

    ids: np.ndarray           # (n,) int64 source token ids
    bag: np.ndarray           # (d,) int64 distinct ids (bag indices)
    bag_value: float          # 1/sqrt(d)


@dataclass
class StepData:
    """Training steps of many pairs, stored sparsely.

    Row r of the dense input is: ``pair_value[pair[r]]`` at ``bag_indices[bag_ptr[p]:bag_ptr[p+1]]``
    (p = pair[r]) plus 1.0 at each of ``fixed[r]`` (window, history, position, progress);
    its target is ``target[r]``.
    """

    fixed: np.ndarray        # (N, F) int64 indices into the input
    pair: np.ndarray         # (N,) int64 which pair each step belongs to
    target: np.ndarray       # (N,) int64 the next target id
    bag_ptr: np.ndarray      # (P+1,) int64 CSR pointers into bag_indices
    bag_indices: np.ndarray  # (nnz,) int64
    pair_value: np.ndarray   # (P,) float32 1/sqrt(#distinct source ids)

    def __len__(self) -> int:
        return int(self.target.shape[0])


@dataclass(frozen=True)
class StepEncoder:
    """Builds step input vectors (see the module docstring for the layout)."""

    source_vocab: int
    target_vocab: int
    history: int = 2
    window: int = 2
    window_dim: int = 1024
    length_ratio: float = 1.0
    position_buckets: int = 16

    def __post_init__(self) -> None:
        for name, low in (("source_vocab", 5), ("target_vocab", 5), ("history", 0), ("window", 0),
                          ("window_dim", 1), ("position_buckets", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
                raise ConfigError(f"StepEncoder.{name} must be an int ≥ {low}, got {v!r}")
        r = self.length_ratio
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0:
            raise ConfigError(f"StepEncoder.length_ratio must be a finite number > 0, got {r!r}")

    # ------------------------------------------------------------------ layout
    @property
    def offsets(self) -> dict[str, int]:
        """Start of each block in the input vector."""
        o = {"bag": 0, "window": self.source_vocab}
        o["history"] = o["window"] + self.window_dim
        o["position"] = o["history"] + self.history * self.target_vocab
        o["progress"] = o["position"] + self.position_buckets
        return o

    @property
    def width(self) -> int:
        """D: the model's input width."""
        return self.offsets["progress"] + self.position_buckets

    @property
    def fixed_count(self) -> int:
        """F: entries set to 1 per step outside the bag (window, history, position, progress)."""
        return (2 * self.window + 1) + self.history + 2

    # ------------------------------------------------------------------ pieces
    def source(self, ids: Sequence[int]) -> SourceContext:
        """Encode a source sentence once (its ids must lie in [0, source_vocab))."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        if arr.size and (arr.min() < 0 or arr.max() >= self.source_vocab):
            raise ConfigError(f"source ids must lie in [0, {self.source_vocab}), got range "
                              f"[{arr.min()}, {arr.max()}]")
        bag = np.unique(arr)
        return SourceContext(ids=arr, bag=bag, bag_value=1.0 / math.sqrt(max(1, bag.size)))

    def aligned(self, t: int, n: int) -> int:
        """p = floor(t / r): the source position aligned to target step t."""
        return int(t / self.length_ratio)

    def _fixed(self, src: np.ndarray, hist: Sequence[int], t: int) -> list[int]:
        o = self.offsets
        n, w = src.shape[0], self.window
        p = self.aligned(t, n)
        out = []
        for k in range(-w, w + 1):
            j = p + k
            x = int(src[j]) if 0 <= j < n else (_BEFORE if j < 0 else _AFTER)
            h = ((x + 3) * _H1 + (k + w) * _H2) & 0xFFFFFFFF
            out.append(o["window"] + h % self.window_dim)
        for j in range(1, self.history + 1):
            y = int(hist[-j]) if j <= len(hist) else BOS
            out.append(o["history"] + (j - 1) * self.target_vocab + y)
        out.append(o["position"] + position_bucket(t, self.position_buckets))
        prog = t / (self.length_ratio * max(1, n))
        out.append(o["progress"] + min(self.position_buckets - 1, int(self.position_buckets * prog / 2)))
        return out

    def rows(self, contexts: Sequence[SourceContext], histories: Sequence[Sequence[int]],
             steps: Sequence[int]) -> np.ndarray:
        """Dense inputs (B, D) float32: row b for source ``contexts[b]``, target prefix
        ``histories[b]`` (ids produced so far, without ``<s>``) at step ``steps[b]``."""
        b = len(contexts)
        x = np.zeros((b, self.width), np.float32)
        for r, (ctx, hist, t) in enumerate(zip(contexts, histories, steps)):
            x[r, ctx.bag] = ctx.bag_value
            x[r, self._fixed(ctx.ids, hist, int(t))] = 1.0
        return x

    # ------------------------------------------------------------------ training data
    def steps(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], eos: int) -> StepData:
        """Every step of every pair: predict y_0..y_{m−1}, then ``eos`` (vectorised per pair;
        row for row equal to :meth:`rows`)."""
        if len(sources) != len(targets):
            raise ConfigError(f"expected as many sources as targets, got {len(sources)} and {len(targets)}")
        o, w, k, v, nb = self.offsets, self.window, self.history, self.target_vocab, self.position_buckets
        buckets = np.array([position_bucket(t, nb) for t in range(max(
            [len(y) + 1 for y in targets] + [1]))], np.int64)
        fixed, pair, target, ptr, bag_idx, values = [], [], [], [0], [], []
        for p, (s, y) in enumerate(zip(sources, targets)):
            ctx = self.source(s)
            bag_idx.append(ctx.bag)
            ptr.append(ptr[-1] + ctx.bag.size)
            values.append(ctx.bag_value)
            y = np.asarray(y, np.int64).reshape(-1)
            m, n = y.size, ctx.ids.size
            t = np.arange(m + 1)
            pos = (t / self.length_ratio).astype(np.int64)            # int() of a non-negative float
            cols = []
            padded = np.concatenate([[_BEFORE], ctx.ids, [_AFTER]])
            for off in range(-w, w + 1):
                j = np.clip(pos + off, -1, n) + 1                     # index into padded
                x = padded[j].astype(np.uint64)
                h = ((x + np.uint64(3)) * np.uint64(_H1) + np.uint64((off + w) * _H2)) & np.uint64(0xFFFFFFFF)
                cols.append(o["window"] + (h % np.uint64(self.window_dim)).astype(np.int64))
            prev = np.concatenate([np.full(k, BOS, np.int64), y])     # prev[t + k − j] = y_{t−j}
            for j in range(1, k + 1):
                cols.append(o["history"] + (j - 1) * v + prev[t + k - j])
            cols.append(o["position"] + buckets[t])
            prog = t / (self.length_ratio * max(1, n))
            cols.append(o["progress"] + np.minimum(nb - 1, (nb * prog / 2).astype(np.int64)))
            fixed.append(np.stack(cols, axis=1))
            pair.append(np.full(m + 1, p, np.int64))
            target.append(np.concatenate([y, [eos]]))
        f = self.fixed_count
        return StepData(
            fixed=np.concatenate(fixed) if fixed else np.zeros((0, f), np.int64),
            pair=np.concatenate(pair) if pair else np.zeros(0, np.int64),
            target=np.concatenate(target).astype(np.int64) if target else np.zeros(0, np.int64),
            bag_ptr=np.asarray(ptr, np.int64),
            bag_indices=np.concatenate(bag_idx) if bag_idx else np.zeros(0, np.int64),
            pair_value=np.asarray(values, np.float32),
        )

    def events(self, data: StepData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The nonzeros of :meth:`dense` as (row, column, value), sorted by row then column,
        each (row, column) once (window slots that collide hold 1, as in the dense form)."""
        rows = np.asarray(rows, np.int64)
        f = data.fixed[rows]                                        # (n, fixed_count)
        r_fixed = np.repeat(np.arange(rows.size), f.shape[1])
        p = data.pair[rows]
        start, stop = data.bag_ptr[p], data.bag_ptr[p + 1]
        counts = stop - start
        r_bag = np.repeat(np.arange(rows.size), counts)
        pos = np.repeat(start - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        r = np.concatenate([r_fixed, r_bag])
        c = np.concatenate([f.reshape(-1), data.bag_indices[pos]])
        v = np.concatenate([np.ones(f.size, np.float32), np.repeat(data.pair_value[p], counts)])
        key, first = np.unique((r * self.width + c)[::-1], return_index=True)   # the last write wins
        return key // self.width, key % self.width, v[::-1][first]

    def dense(self, data: StepData, rows: np.ndarray) -> np.ndarray:
        """Dense inputs (len(rows), D) float32 of the given training steps."""
        r, c, v = self.events(data, rows)
        x = np.zeros((len(rows), self.width), np.float32)
        x[r, c] = v
        return x

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(kind=_KIND, version=_VERSION)
        return d

    @classmethod
    def from_dict(cls, data: Any, where: str = "features") -> "StepEncoder":
        check_spec_header(data, _KIND, _VERSION, where, "feature spec")
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(data))
        if missing:
            raise ModelFileError(f"{where}: feature spec lacks {missing}")
        try:
            return cls(**{k: data[k] for k in names})
        except ConfigError as exc:
            raise ModelFileError(f"{where}: bad feature spec: {exc}") from None
