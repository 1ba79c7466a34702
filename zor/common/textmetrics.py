"""Translation quality: chrF, chrF++ and BLEU through sacrebleu (imported lazily).

All three are corpus-level scores on sacrebleu's 0–100 scale (chrF 26.6 here is the
0.266 of the AmericasNLP 2021 reports). sacrebleu is part of the ``translate`` extra;
without it :func:`score` raises :class:`~zor.common.errors.ConfigError` saying so.

    chrF    character n-gram F-score, n ≤ 6, β = 2           (sacrebleu CHRF())
    chrF++  chrF plus word unigrams and bigrams               (CHRF(word_order=2))
    BLEU    4-gram BLEU, 13a tokenization, brevity penalty    (BLEU())

Example:
    >>> round(score(["in calli"], ["in calli"])["chrf"], 1)
    100.0
"""

from __future__ import annotations

from typing import Sequence

from .errors import ConfigError, InputError

__all__ = ["score"]


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``{"chrf", "chrf++", "bleu"}`` of ``hypotheses`` against one reference each."""
    if len(hypotheses) != len(references):
        raise InputError(f"expected one reference per hypothesis, got {len(hypotheses)} hypotheses and "
                         f"{len(references)} references")
    if not references:
        raise InputError("expected at least one sentence to score, got none")
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise ConfigError("scoring translations needs sacrebleu: pip install sacrebleu "
                          "(or the project's 'translate' extra)") from None
    hyps, refs = [str(h) for h in hypotheses], [[str(r) for r in references]]
    return {
        "chrf": float(CHRF().corpus_score(hyps, refs).score),
        "chrf++": float(CHRF(word_order=2).corpus_score(hyps, refs).score),
        "bleu": float(BLEU().corpus_score(hyps, refs).score),
    }
