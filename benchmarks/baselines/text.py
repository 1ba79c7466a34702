"""Simple translation baselines: copy the source, and a translation memory.

- :func:`copy_source`: the output is the source sentence itself (names, numbers and
  loanwords give it a non-zero chrF; it is the floor any model must clear).
- :class:`TranslationMemory`: the output is the target side of the training pair
  whose source is most similar to the input, by cosine similarity of TF-IDF-weighted
  character n-grams (n = 2..4, inside ``▁``-marked words, lowercased):

      sim(a, b) = Σ_g w_g² · [g ∈ a][g ∈ b] / (‖a‖ ‖b‖),   w_g = log(1 + N / df_g)

  (binary n-gram presence; N training sentences, df_g how many contain g).

Numpy-only. The equal-size backprop baseline lives with the engine
(:class:`benchmarks.baselines.translation.BackpropStepModel`).

Example:
    >>> tm = TranslationMemory(["la casa", "el agua"], ["in calli", "in atl"])
    >>> tm.translate(["una casa grande"])
    ['in calli']
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from zor.common.errors import ConfigError, InputError
from zor.common.tokenizer import normalize

__all__ = ["copy_source", "char_ngrams", "TranslationMemory"]


def copy_source(sources: Sequence[str]) -> list[str]:
    """The sources themselves, normalized."""
    return [normalize(s) for s in sources]


def char_ngrams(text: str, sizes: Sequence[int] = (2, 3, 4)) -> set[str]:
    """Distinct character n-grams of the lowercased, normalized text (spaces as ``▁``)."""
    s = "\u2581" + normalize(text).lower().replace(" ", "\u2581") + "\u2581"
    return {s[i:i + n] for n in sizes for i in range(len(s) - n + 1)}


class TranslationMemory:
    """Nearest training source by character n-gram cosine; outputs its translation."""

    def __init__(self, sources: Sequence[str], targets: Sequence[str], dim: int = 1 << 18,
                 sizes: Sequence[int] = (2, 3, 4)) -> None:
        if len(sources) != len(targets) or not sources:
            raise ConfigError(f"expected matching, non-empty sources and targets, got {len(sources)} and {len(targets)}")
        self.dim, self.sizes = int(dim), tuple(sizes)
        self.targets = [normalize(t) for t in targets]
        rows = [self._ids(s) for s in sources]
        df = np.zeros(self.dim, np.float64)
        for r in rows:
            df[r] += 1
        self.idf = np.log1p(len(rows) / np.maximum(df, 1.0))
        lens = np.array([r.size for r in rows])
        order = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        owner = np.repeat(np.arange(len(rows)), lens)
        sort = np.argsort(order, kind="stable")
        self._post_g, self._post_doc = order[sort], owner[sort]          # postings sorted by n-gram id
        self._norm = np.sqrt(np.array([float((self.idf[r] ** 2).sum()) for r in rows]))

    def _ids(self, text: str) -> np.ndarray:
        grams = char_ngrams(text, self.sizes)
        return np.unique(np.fromiter((zlib.crc32(g.encode("utf-8")) % self.dim for g in grams), np.int64, len(grams)))

    def nearest(self, text: str) -> tuple[int, float]:
        """(index of the most similar training source, its cosine similarity)."""
        if not isinstance(text, str):
            raise InputError(f"expected a str, got {type(text).__name__}")
        q = self._ids(text)
        if q.size == 0:
            return 0, 0.0
        lo = np.searchsorted(self._post_g, q, side="left")
        hi = np.searchsorted(self._post_g, q, side="right")
        counts = hi - lo
        idx = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
        w = np.repeat(self.idf[q] ** 2, counts)
        scores = np.bincount(self._post_doc[idx], weights=w, minlength=len(self.targets))
        qn = np.sqrt(float((self.idf[q] ** 2).sum()))
        sims = scores / np.maximum(self._norm * qn, 1e-12)
        best = int(np.argmax(sims))
        return best, float(sims[best])

    def translate(self, texts: Sequence[str]) -> list[str]:
        """The translation of the nearest training source of each text ("" for empty text)."""
        return [self.targets[self.nearest(t)[0]] if normalize(t) else "" for t in texts]
