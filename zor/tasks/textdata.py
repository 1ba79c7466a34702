"""Parallel text: loading through ``elotl``, normalisation, and a split by document.

The corpora come from the ``elotl`` package (an optional dependency, imported only
when a corpus is loaded; its texts are never copied into this repository):

    =========  ===============  ========================  ============================
    pair       elotl corpus     rows                      row layout
    =========  ===============  ========================  ============================
    es-nah     ``axolotl``      16,111, 34 documents      [es, nah, variant, document, ...]
    es-oto     ``tsunkua``      4,963, 6 documents        [es, oto, variant, document, ...]
    es-mix     ``kolo``         1,710                     [es, mix, variant, document, ...]
    =========  ===============  ========================  ============================

Every pair is normalised (:func:`zor.common.tokenizer.normalize`); rows with an empty side
are dropped. :func:`split_by_document` assigns whole *documents* to train / dev /
test, so no document's sentences leak from training into evaluation: documents are
shuffled with a fixed seed; the test split takes them in that order until it holds
``test`` of the pairs, skipping any document that would overshoot that share by more
than half (when every document is that big, it takes the smallest one); then dev
likewise; the rest trains. A reverse pair
(``nah-es``) swaps the sides.

Example (a made-up corpus; real corpora load with ``load_pairs("es-nah")``):
    >>> rows = [Pair("uno", "ce", "a"), Pair("dos", "ome", "b"), Pair("tres", "yei", "c")]
    >>> s = split_by_document(rows, dev=0.3, test=0.3, seed=0)
    >>> sorted(len(v) for v in s.values())
    [1, 1, 1]
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from zor.common.errors import ConfigError, DataError, DataNotFoundError
from zor.common.tokenizer import normalize

__all__ = ["Pair", "CORPORA", "LANGUAGE_PAIRS", "load_pairs", "pairs_from_rows", "split_by_document", "split_summary"]


@dataclass(frozen=True)
class Pair:
    """One aligned sentence pair: source, target, the document it comes from, its variant."""

    source: str
    target: str
    document: str
    variant: str = ""


# language pair → (elotl corpus, source column, target column)
CORPORA: dict[str, tuple[str, int, int]] = {
    "es-nah": ("axolotl", 0, 1),
    "nah-es": ("axolotl", 1, 0),
    "es-oto": ("tsunkua", 0, 1),
    "oto-es": ("tsunkua", 1, 0),
    "es-mix": ("kolo", 0, 1),
    "mix-es": ("kolo", 1, 0),
}
LANGUAGE_PAIRS = tuple(CORPORA)


def pairs_from_rows(rows: Iterable[Sequence], source_col: int = 0, target_col: int = 1,
                    where: str = "corpus") -> list[Pair]:
    """Normalised :class:`Pair` objects from rows ``[src, tgt, variant, document, ...]``.

    Rows whose source or target is empty after normalisation are dropped; a row
    with fewer than two text columns raises :class:`~zor.common.errors.DataError`.
    """
    out = []
    for k, row in enumerate(rows):
        if not isinstance(row, (list, tuple)) or len(row) <= max(source_col, target_col):
            raise DataError(f"{where} row {k}: expected [source, target, variant, document, ...], got {row!r:.80}")
        src, tgt = row[source_col], row[target_col]
        if not isinstance(src, str) or not isinstance(tgt, str):
            raise DataError(f"{where} row {k}: expected text in columns {source_col} and {target_col}, "
                            f"got {type(src).__name__} and {type(tgt).__name__}")
        src, tgt = normalize(src), normalize(tgt)
        if not src or not tgt:
            continue
        variant = str(row[2]) if len(row) > 2 and row[2] is not None else ""
        document = str(row[3]).strip() if len(row) > 3 and row[3] is not None else ""
        out.append(Pair(src, tgt, document or "(no document)", variant.strip()))
    return out


def load_pairs(pair: str = "es-nah") -> list[Pair]:
    """All normalised pairs of a language pair (see the table in the module docstring).

    Needs the ``elotl`` package (``pip install elotl``, part of the ``translate``
    extra); without it raises :class:`~zor.common.errors.DataNotFoundError`.
    """
    if pair not in CORPORA:
        raise ConfigError(f"unknown language pair {pair!r}: expected one of {list(LANGUAGE_PAIRS)}")
    corpus, s, t = CORPORA[pair]
    try:
        import elotl.corpus
    except ImportError:
        raise DataNotFoundError(f"language pair {pair!r} needs the elotl package, which is not installed: "
                                "pip install elotl (or the project's 'translate' extra)") from None
    try:
        rows = elotl.corpus.load(corpus)
    except Exception as exc:  # elotl raises plain exceptions for a damaged install
        raise DataError(f"elotl could not load corpus {corpus!r}: {exc}") from None
    if not rows:
        raise DataError(f"elotl corpus {corpus!r} is empty: expected parallel rows")
    return pairs_from_rows(rows, s, t, where=f"elotl corpus {corpus!r}")


def split_by_document(
    pairs: Sequence[Pair],
    dev: float = 0.1,
    test: float = 0.1,
    seed: int = 0,
    test_documents: Optional[Sequence[str]] = None,
) -> dict[str, list[Pair]]:
    """``{"train", "dev", "test"}`` with no document in two splits (see the module docstring).

    ``test_documents`` names the test documents explicitly instead (dev is then
    drawn from the rest). Raises :class:`~zor.common.errors.ConfigError` for fractions
    outside [0, 1) or summing to ≥ 1, and :class:`~zor.common.errors.DataError` when there
    are too few documents to give every requested split at least one.
    """
    for name, v in (("dev", dev), ("test", test)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
            raise ConfigError(f"{name} must be a fraction in [0, 1), got {v!r}")
    if dev + test >= 1:
        raise ConfigError(f"dev + test must leave pairs to train on, got {dev} + {test} ≥ 1")
    docs: dict[str, int] = {}
    for p in pairs:
        docs[p.document] = docs.get(p.document, 0) + 1
    total = sum(docs.values())
    names = sorted(docs)
    random.Random(seed).shuffle(names)
    assign: dict[str, str] = {}
    if test_documents is not None:
        unknown = sorted(set(test_documents) - set(docs))
        if unknown:
            raise ConfigError(f"test_documents {unknown} are not in the corpus: expected some of {sorted(docs)[:10]}...")
        for d in test_documents:
            assign[d] = "test"
    wanted = [("dev", dev)] if test_documents is not None else [("test", test), ("dev", dev)]
    rest = [d for d in names if d not in assign]
    for split, share in wanted:
        if share <= 0 or not rest:
            continue
        goal, have = share * total, 0
        for d in list(rest):                       # shuffled order; skip documents that overshoot by > 50%
            if have >= goal:
                break
            if have + docs[d] <= 1.5 * goal:
                assign[d] = split
                have += docs[d]
                rest.remove(d)
        if have == 0:                              # every document is too big: take the smallest
            d = min(rest, key=lambda k: (docs[k], k))
            assign[d] = split
            rest.remove(d)
    for d in rest:
        assign[d] = "train"
    out: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for p in pairs:
        out[assign[p.document]].append(p)
    needed = ["train"] + [s for s, v in (("dev", dev), ("test", test)) if v > 0 or (s == "test" and test_documents)]
    empty = [s for s in needed if not out[s]]
    if empty:
        raise DataError(f"splitting {len(docs)} documents by document left {empty} empty: expected enough "
                        "documents for train, dev and test (lower dev/test or add documents)")
    return out


def split_summary(splits: dict[str, list[Pair]]) -> dict[str, dict]:
    """Per split: pair count and document names (what a benchmark report shows)."""
    return {k: {"pairs": len(v), "documents": sorted({p.document for p in v})} for k, v in splits.items()}
