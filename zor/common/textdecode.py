"""Translating text with a step model: the spec in ``zor.task``, and greedy / beam decoding.

Numpy-only: the engine (:mod:`zor.tasks.translation`) and the torch-free runtime
(``zor.runtime.tasks.translate``) decode through the same code; they differ only in the
*step function* ``step(x) -> scores`` ((B, D) float32 inputs from
:class:`~zor.common.textfeatures.StepEncoder` to (B, V_t) scores).

Scores → log-probabilities for beam search:

    output = "probability"  (a Zor net trained on one-hot targets: its charges estimate
                             P(next = v), least squares' conditional mean)
                             log p_v = log(max(c_v, ε) / Σ_u max(c_u, ε)),  ε = 1e−4
    output = "logits"       (a backprop net trained with cross-entropy)
                             log p_v = c_v − logsumexp(c)

``<pad>``, ``<unk>`` and ``<s>`` are never produced; ``</s>`` ends a hypothesis. A
hypothesis also ends at ``max_len(n) = min(max_target_tokens, ceil(2·r·n) + 4)``
tokens for a source of n tokens. With ``no_repeat_ngram = q > 0`` a token that would
repeat a q-gram already in the hypothesis is skipped (step models with a short
history otherwise loop). Greedy decoding takes the best token each step; beam search
keeps the ``beam`` best prefixes by summed log-probability and ranks finished ones by
sum / length^α (α = ``length_penalty``; default 3, chosen on dev chrF:
``docs/notes/translation-decoding.md``).

Text-level behaviour (:func:`translate_texts`), documented and tested:

- empty or blank text → ``""`` (nothing to translate);
- text whose characters are all unknown to the source tokenizer →
  :class:`~zor.common.errors.InputError` naming them; some unknown characters are fine;
- a source longer than ``max_source_tokens`` is never truncated: with
  ``long="split"`` (default) it is cut after every sentence mark (. ; : ? !), a part
  still too long after every comma, then in halves at spaces (:func:`split_long`);
  each piece is translated and the translations are joined with a space; with
  ``long="error"`` it raises :class:`~zor.common.errors.InputError`;
- a task dict that is not a translation task → :class:`~zor.common.errors.ModelFileError`.

Example (a hand-made step function that always says "token 5, then end"):
    >>> import numpy as np
    >>> from zor.common.textfeatures import StepEncoder
    >>> enc = StepEncoder(source_vocab=8, target_vocab=8, history=1, window=0, window_dim=4)
    >>> def step(x):
    ...     s = np.zeros((len(x), 8), np.float32); done = x[:, 12 + 5] > 0
    ...     s[:, 5] = np.where(done, 0.1, 0.9); s[:, 3] = np.where(done, 0.9, 0.1); return s
    >>> greedy(step, enc, [enc.source([4, 6])], max_len=[10])
    [[5]]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import ConfigError, DTypeError, InputError, ModelFileError
from .textfeatures import SourceContext, StepEncoder
from .tokenizer import BOS, EOS, PAD, UNK, SubwordTokenizer, normalize

__all__ = [
    "TranslationSpec",
    "one_line",
    "StepFn",
    "log_probs",
    "greedy",
    "beam_search",
    "split_long",
    "translate_texts",
    "TASK_NAME",
]

TASK_NAME = "translate"
StepFn = Callable[[np.ndarray], np.ndarray]
_EPS = 1e-4
_BANNED = (PAD, UNK, BOS)


@dataclass
class TranslationSpec:
    """What a translation model needs besides its weights (the ``translate`` part of ``zor.task``)."""

    source_tokenizer: SubwordTokenizer
    target_tokenizer: SubwordTokenizer
    encoder: StepEncoder
    source_language: str = "src"
    target_language: str = "tgt"
    max_source_tokens: int = 64
    max_target_tokens: int = 128
    output: str = "probability"                  # "probability" (Zor charges) or "logits"
    decoding: dict = field(default_factory=lambda: {"beam": 1, "no_repeat_ngram": 3, "length_penalty": 3.0})

    def __post_init__(self) -> None:
        if self.output not in ("probability", "logits"):
            raise ConfigError(f"output must be 'probability' or 'logits', got {self.output!r}")
        if self.encoder.source_vocab != self.source_tokenizer.vocab_size:
            raise ConfigError(f"encoder.source_vocab {self.encoder.source_vocab} != source tokenizer's "
                              f"{self.source_tokenizer.vocab_size}")
        if self.encoder.target_vocab != self.target_tokenizer.vocab_size:
            raise ConfigError(f"encoder.target_vocab {self.encoder.target_vocab} != target tokenizer's "
                              f"{self.target_tokenizer.vocab_size}")
        for name in ("max_source_tokens", "max_target_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an int ≥ 1, got {v!r}")

    def max_len(self, n: int) -> int:
        """Longest output, in tokens, for a source of n tokens."""
        return max(1, min(self.max_target_tokens, math.ceil(2 * self.encoder.length_ratio * n) + 4))

    def to_task(self) -> dict[str, Any]:
        """The ``zor.task`` dict of a translation model (plain JSON data)."""
        return {
            "name": TASK_NAME,
            "translate": {
                "version": 1,
                "source_language": self.source_language,
                "target_language": self.target_language,
                "source_tokenizer": self.source_tokenizer.to_dict(),
                "target_tokenizer": self.target_tokenizer.to_dict(),
                "features": self.encoder.to_dict(),
                "max_source_tokens": self.max_source_tokens,
                "max_target_tokens": self.max_target_tokens,
                "output": self.output,
                "decoding": dict(self.decoding),
            },
            "input": {"meaning": "step features (zor.common.textfeatures.StepEncoder): source bag, aligned window, "
                                 "last target tokens, position"},
            "output": {"meaning": f"score of each target token as the next one ({self.output})"},
        }

    @classmethod
    def from_task(cls, task: Any, where: str = "model") -> "TranslationSpec":
        """Read a spec back from a ``zor.task`` dict; anything else raises ModelFileError."""
        name = task.get("name") if isinstance(task, dict) else None
        if name != TASK_NAME or not isinstance(task.get("translate"), dict):
            raise ModelFileError(f"{where} is not a translation model: expected task {TASK_NAME!r} with a "
                                 f"'translate' section, got task {name!r}")
        t = task["translate"]
        try:
            return cls(
                source_tokenizer=SubwordTokenizer.from_dict(t["source_tokenizer"], f"{where}: source tokenizer"),
                target_tokenizer=SubwordTokenizer.from_dict(t["target_tokenizer"], f"{where}: target tokenizer"),
                encoder=StepEncoder.from_dict(t["features"], f"{where}: features"),
                source_language=str(t.get("source_language", "src")),
                target_language=str(t.get("target_language", "tgt")),
                max_source_tokens=t["max_source_tokens"],
                max_target_tokens=t["max_target_tokens"],
                output=t.get("output", "probability"),
                decoding=dict(t.get("decoding") or {}),
            )
        except KeyError as exc:
            raise ModelFileError(f"{where}: translation task lacks {exc.args[0]!r}") from None
        except ConfigError as exc:
            raise ModelFileError(f"{where}: inconsistent translation task: {exc}") from None


# ---------------------------------------------------------------------- scores
def log_probs(scores: np.ndarray, output: str) -> np.ndarray:
    """Log-probabilities (B, V) from step scores (see the module docstring)."""
    s = np.asarray(scores, np.float64)
    if output == "logits":
        m = s.max(axis=1, keepdims=True)
        return s - m - np.log(np.exp(s - m).sum(axis=1, keepdims=True))
    p = np.maximum(s, _EPS)
    return np.log(p / p.sum(axis=1, keepdims=True))


def _blocked(hyp: Sequence[int], q: int) -> list[int]:
    """Tokens that would complete a q-gram already present in ``hyp``."""
    if q <= 0 or len(hyp) < q - 1:
        return []
    if q == 1:
        return list(set(hyp))
    prefix = tuple(hyp[len(hyp) - q + 1:])
    return [hyp[i + q - 1] for i in range(len(hyp) - q + 1) if tuple(hyp[i:i + q - 1]) == prefix]


def _check_scores(scores: Any, rows: int, vocab: int) -> np.ndarray:
    s = np.asarray(scores)
    if s.shape != (rows, vocab):
        raise ConfigError(f"step function returned shape {s.shape}, expected ({rows}, {vocab})")
    return s


def greedy(step: StepFn, encoder: StepEncoder, sources: Sequence[SourceContext], max_len: Sequence[int],
           no_repeat_ngram: int = 0) -> list[list[int]]:
    """Greedy decoding of every source at once; returns target ids without ``</s>``.

    (The argmax of the scores is the argmax of the log-probabilities for both output
    kinds, so greedy needs no conversion.)"""
    hyps: list[list[int]] = [[] for _ in sources]
    active = [i for i in range(len(sources)) if max_len[i] > 0]
    t = 0
    vocab = encoder.target_vocab
    while active:
        x = encoder.rows([sources[i] for i in active], [hyps[i] for i in active], [t] * len(active))
        s = _check_scores(step(x), len(active), vocab).astype(np.float64, copy=True)
        s[:, _BANNED] = -np.inf
        if no_repeat_ngram:
            for r, i in enumerate(active):
                s[r, _blocked(hyps[i], no_repeat_ngram)] = -np.inf
        best = s.argmax(axis=1)
        still = []
        for r, i in enumerate(active):
            tok = int(best[r])
            if tok == EOS or not np.isfinite(s[r, tok]):
                continue
            hyps[i].append(tok)
            if len(hyps[i]) < max_len[i]:
                still.append(i)
        active = still
        t += 1
    return hyps


def beam_search(step: StepFn, encoder: StepEncoder, sources: Sequence[SourceContext], max_len: Sequence[int],
                beam: int = 4, no_repeat_ngram: int = 0, length_penalty: float = 1.0,
                output: str = "probability") -> list[list[int]]:
    """Beam search over every source at once (all live hypotheses in one batch per step)."""
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ConfigError(f"beam must be an int ≥ 1, got {beam!r}")
    vocab = encoder.target_vocab
    live: list[list[tuple[float, list[int]]]] = [[(0.0, [])] if max_len[i] > 0 else [] for i in range(len(sources))]
    done: list[list[tuple[float, list[int]]]] = [[] for _ in sources]
    t = 0

    def final(score: float, hyp: list[int]) -> float:
        return score / max(1, len(hyp) + 1) ** length_penalty

    while any(live):
        owners = [(i, h) for i, hs in enumerate(live) for h in hs]
        x = encoder.rows([sources[i] for i, _ in owners], [h[1] for _, h in owners], [t] * len(owners))
        lp = log_probs(_check_scores(step(x), len(owners), vocab), output)
        lp[:, _BANNED] = -np.inf
        cands: list[list[tuple[float, list[int], int]]] = [[] for _ in sources]
        for r, (i, (score, hyp)) in enumerate(owners):
            row = lp[r]
            if no_repeat_ngram:
                row = row.copy()
                row[_blocked(hyp, no_repeat_ngram)] = -np.inf
            top = np.argpartition(-row, min(beam, vocab - 1))[:beam + 1]
            for tok in top:
                v = float(row[tok])
                if np.isfinite(v):
                    cands[i].append((score + v, hyp, int(tok)))
        for i in range(len(sources)):
            if not live[i]:
                continue
            cands[i].sort(key=lambda c: -c[0])
            nxt = []
            for score, hyp, tok in cands[i]:
                if tok == EOS:
                    done[i].append((final(score, hyp), hyp))
                    continue
                new = hyp + [tok]
                if len(new) >= max_len[i]:
                    done[i].append((final(score, new), new))
                    continue
                nxt.append((score, new))
                if len(nxt) == beam:
                    break
            # stop a source once it has `beam` finished hypotheses
            if len(done[i]) >= beam:
                nxt = []
            live[i] = nxt
        t += 1
    return [max(d, key=lambda c: c[0])[1] if d else [] for d in done]


# ---------------------------------------------------------------------- text level
_CUTS = (re.compile(r"(?<=[.;:?!])\s+"), re.compile(r"(?<=,)\s+"))


def split_long(text: str, count: Callable[[str], int], limit: int) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` tokens (``count`` counts them).

    A text within the limit is one piece. Otherwise it is cut after every sentence
    mark (. ; : ? !); a part still too long is cut after every comma, then halved at a
    space, recursively. A single word longer than the limit raises
    :class:`~zor.common.errors.InputError`. Joining the pieces with spaces gives back ``text``.
    """
    if count(text) <= limit:
        return [text]
    for cut in _CUTS:
        parts = [p for p in cut.split(text) if p]
        if len(parts) > 1:
            return [piece for part in parts for piece in split_long(part, count, limit)]
    words = text.split(" ")
    if len(words) == 1:
        raise InputError(f"a single word of {count(text)} tokens is longer than the model's limit of "
                         f"{limit} source tokens: {text[:40]!r}...")
    half = len(words) // 2
    return split_long(" ".join(words[:half]), count, limit) + split_long(" ".join(words[half:]), count, limit)


def translate_texts(
    texts: Sequence[str],
    spec: TranslationSpec,
    step: StepFn,
    beam: Optional[int] = None,
    batch_size: int = 32,
    long: str = "split",
    no_repeat_ngram: Optional[int] = None,
    length_penalty: Optional[float] = None,
) -> list[str]:
    """Translate ``texts`` with ``step`` (see the module docstring for bad-input behaviour).

    Sentences are decoded ``batch_size`` at a time (greedy when the beam is 1).
    ``beam``, ``no_repeat_ngram`` and ``length_penalty`` default to the spec's
    ``decoding`` settings.
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise DTypeError(f"expected a list of str, got {type(texts).__name__}"
                         + (" (wrap one sentence in a list, or use translate(text))" if isinstance(texts, str) else ""))
    if long not in ("split", "error"):
        raise ConfigError(f"long must be 'split' or 'error', got {long!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int ≥ 1, got {batch_size!r}")
    dec = spec.decoding
    beam = int(dec.get("beam", 1)) if beam is None else beam
    q = int(dec.get("no_repeat_ngram", 0)) if no_repeat_ngram is None else no_repeat_ngram
    alpha = float(dec.get("length_penalty", 1.0)) if length_penalty is None else length_penalty
    pieces, owner = _source_pieces(texts, spec, long)

    out_ids: list[list[int]] = []
    for start in range(0, len(pieces), batch_size):
        chunk = pieces[start:start + batch_size]
        ctxs = [spec.encoder.source(ids) for ids in chunk]
        lens = [spec.max_len(len(ids)) for ids in chunk]
        if beam == 1:
            out_ids.extend(greedy(step, spec.encoder, ctxs, lens, q))
        else:
            out_ids.extend(beam_search(step, spec.encoder, ctxs, lens, beam, q, alpha, spec.output))
    result: list[list[str]] = [[] for _ in texts]
    for k, ids in zip(owner, out_ids):
        piece = spec.target_tokenizer.decode(ids)
        if piece:
            result[k].append(piece)
    return [one_line(" ".join(parts)) for parts in result]


_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with every character that ``str.splitlines`` breaks at (\\n, \\r, \\f, U+2028, ...) made a space,
    so a list of translations written one per line always has one line per text."""
    return _LINE_BREAKS.sub(" ", text)


def _source_pieces(texts: Sequence[str], spec: TranslationSpec, long: str) -> tuple[list[list[int]], list[int]]:
    """(pieces, owner): the source ids of every piece to decode and the text each belongs to.

    An empty text has no piece; a text over ``spec.max_source_tokens`` is split into
    pieces (``long="split"``) or raises InputError (``long="error"``), as does a text
    none of whose characters the source tokenizer knows.
    """
    src_tok, limit = spec.source_tokenizer, spec.max_source_tokens
    pieces: list[list[int]] = []      # per piece: its source ids
    owner: list[int] = []             # per piece: which text it belongs to
    for k, text in enumerate(texts):
        if not isinstance(text, str):
            raise DTypeError(f"text {k}: expected a str, got {type(text).__name__}")
        norm = normalize(text)
        if not norm:
            continue
        ids = src_tok.encode(norm)
        if len(src_tok.unknown_chars(norm)) == len(set(norm) - {" "}):
            raise InputError(f"text {k}: none of its characters are known to the source tokenizer "
                             f"(unknown: {''.join(src_tok.unknown_chars(norm))[:40]!r}); expected "
                             f"{spec.source_language} text")
        if len(ids) > limit:
            if long == "error":
                raise InputError(f"text {k} is {len(ids)} source tokens long: expected at most {limit} "
                                 "(pass long='split' to translate it in pieces)")
            for part in split_long(norm, lambda s: len(src_tok.encode(s)), limit):
                pieces.append(src_tok.encode(part))
                owner.append(k)
        else:
            pieces.append(ids)
            owner.append(k)
    return pieces, owner
