"""A small subword tokenizer (byte-pair merges over characters), pure Python.

Used by the engine to train translation models and by the torch-free runtime to
run them, so it imports only the standard library and :mod:`zor.common.errors`; a trained
tokenizer is plain JSON data (:meth:`SubwordTokenizer.to_dict`) that travels in the
model's ``zor.task`` metadata.

Text → pieces, reversibly:

1. :func:`normalize`: Unicode NFC, typographic quotes and dashes to ASCII,
   whitespace runs to one space, stripped.
2. Pre-tokenization: the text is cut at spaces into chunks; each chunk is cut into
   *words* (runs of letters, combining marks, digits and apostrophes) and single
   punctuation characters. The first unit of every chunk carries the word-start
   marker ``▁`` (U+2581), so ``decode(encode(t)) == normalize(t)`` for any text whose
   characters are all known.
3. Each unit is a sequence of characters, merged by the learned merge list: at each
   step the adjacent pair with the lowest merge rank is joined, until no learned
   pair is left (classic BPE applied by rank).

Training (:meth:`SubwordTokenizer.train`): count units over the training text; the
alphabet is every character seen at least ``min_char_count`` times (others encode
as ``<unk>``); then repeatedly join the most frequent adjacent pair (ties: the
smallest pair in string order, so training is deterministic) until the vocabulary
holds ``vocab_size`` entries or no pair occurs ``min_pair_count`` times.

Ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<s>`` (start), 3 ``</s>`` (end), then the
alphabet in sorted order, then one id per merge in merge order.

Example:
    >>> tok = SubwordTokenizer.train(["in calli", "in atl", "calli"], vocab_size=20)
    >>> tok.decode(tok.encode("in calli"))
    'in calli'
    >>> tok.pieces("calli")
    ['▁calli']
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from collections import Counter, defaultdict
from typing import Any, Iterable, Sequence

from .errors import ConfigError, DTypeError, InputError, ModelFileError

__all__ = [
    "SubwordTokenizer",
    "normalize",
    "split_units",
    "PAD",
    "UNK",
    "BOS",
    "EOS",
    "SPECIALS",
    "MARK",
]

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
MARK = "\u2581"                     # ▁ : this unit starts a new space-separated chunk
_KIND = "zor-bpe"
_VERSION = 1


def check_spec_header(data: Any, kind: str, version: int, where: str, noun: str) -> None:
    """ModelFileError unless ``data`` is a dict of this ``kind`` whose ``version`` is at most ``version``."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise ModelFileError(f"{where}: expected a {kind!r} {noun}, got {found!r}")
    if not isinstance(data.get("version"), int) or data["version"] > version:
        raise ModelFileError(f"{where}: {noun} version {data.get('version')!r} is not readable here "
                             f"(expected ≤ {version})")

_TRANSLATE = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u02bc": "'", "\u00b4": "'", "`": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
    "\u2013": "-", "\u2014": "-", "\u2012": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
    "\u2026": "...", "\u00a0": " ", "\u200b": "", "\ufeff": "", MARK: "_",
})
_SPACES = re.compile(r"\s+")
_APOSTROPHES = frozenset("'")


def normalize(text: str) -> str:
    """NFC, ASCII quotes/dashes/ellipsis, one space between chunks, stripped.

    ``▁`` in the input becomes ``_`` (it is the tokenizer's own marker).

        >>> normalize("  “Tlazohcamati”  —  ¿sí? ")
        '"Tlazohcamati" - ¿sí?'
    """
    if not isinstance(text, str):
        raise DTypeError(f"expected a str, got {type(text).__name__}")
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    text = "".join(ch for ch in text if ch in "\t\n\r" or unicodedata.category(ch)[0] != "C")
    return _SPACES.sub(" ", text).strip()


def _is_word_char(ch: str) -> bool:
    return ch in _APOSTROPHES or unicodedata.category(ch)[0] in "LMN"


def split_units(text: str) -> list[str]:
    """Pre-tokenize normalized text into units; chunk starts carry ``▁``.

        >>> split_units("¿Quién es? in tlacatl")
        ['▁¿', 'Quién', '▁es', '?', '▁in', '▁tlacatl']
    """
    units: list[str] = []
    for chunk in text.split(" "):
        if not chunk:
            continue
        start = len(units)
        word = ""
        for ch in chunk:
            if _is_word_char(ch):
                word += ch
                continue
            if word:
                units.append(word)
                word = ""
            units.append(ch)
        if word:
            units.append(word)
        units[start] = MARK + units[start]
    return units


class SubwordTokenizer:
    """Byte-pair-style subword tokenizer over characters (see the module docstring)."""

    def __init__(self, alphabet: Sequence[str], merges: Sequence[Sequence[str]]) -> None:
        alphabet = list(alphabet)
        if len(set(alphabet)) != len(alphabet) or any(not isinstance(c, str) or len(c) != 1 for c in alphabet):
            raise ConfigError("alphabet: expected distinct single characters")
        self.alphabet: list[str] = alphabet
        self.merges: list[tuple[str, str]] = []
        self.vocab: list[str] = list(SPECIALS) + alphabet
        self._ids: dict[str, int] = {p: i for i, p in enumerate(self.vocab)}
        self._ranks: dict[tuple[str, str], int] = {}
        for rank, pair in enumerate(merges):
            if len(pair) != 2 or not all(isinstance(p, str) for p in pair):
                raise ConfigError(f"merge {rank}: expected a pair of strings, got {pair!r}")
            a, b = pair
            if a not in self._ids or b not in self._ids:
                raise ConfigError(f"merge {rank} ({a!r}, {b!r}) joins a piece that is not in the vocabulary")
            joined = a + b
            if joined in self._ids:
                raise ConfigError(f"merge {rank} ({a!r}, {b!r}) makes {joined!r}, which is already in the vocabulary")
            self.merges.append((a, b))
            self._ranks[(a, b)] = rank
            self._ids[joined] = len(self.vocab)
            self.vocab.append(joined)
        self._cache: dict[str, tuple[int, ...]] = {}

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1000,
        min_char_count: int = 2,
        min_pair_count: int = 2,
    ) -> "SubwordTokenizer":
        """Learn an alphabet and merges from ``texts`` (see the module docstring)."""
        for name, value, low in (("vocab_size", vocab_size, len(SPECIALS) + 1),
                                 ("min_char_count", min_char_count, 1), ("min_pair_count", min_pair_count, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int ≥ {low}, got {value!r}")
        units: Counter[str] = Counter()
        for text in texts:
            units.update(split_units(normalize(text)))
        alphabet, budget = _alphabet(units, vocab_size, min_char_count)
        return cls(alphabet, _learn_merges(units, alphabet, budget, min_pair_count))

    # ------------------------------------------------------------------ encoding
    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _encode_unit(self, unit: str) -> tuple[int, ...]:
        hit = self._cache.get(unit)
        if hit is not None:
            return hit
        sym = list(unit)
        ranks = self._ranks
        while len(sym) > 1:
            best, best_rank = -1, None
            for k in range(len(sym) - 1):
                r = ranks.get((sym[k], sym[k + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = k, r
            if best < 0:
                break
            sym[best:best + 2] = [sym[best] + sym[best + 1]]
        ids = tuple(self._ids.get(s, UNK) for s in sym)
        if len(self._cache) < 100_000:
            self._cache[unit] = ids
        return ids

    def encode(self, text: str, bos: bool = False, eos: bool = False) -> list[int]:
        """Token ids of ``text`` (normalized first); unknown characters become ``<unk>`` (1)."""
        ids: list[int] = [BOS] if bos else []
        for unit in split_units(normalize(text)):
            ids.extend(self._encode_unit(unit))
        if eos:
            ids.append(EOS)
        return ids

    def pieces(self, text: str) -> list[str]:
        """The subword strings of ``text`` (``<unk>`` where a character is unknown)."""
        return [self.vocab[i] for i in self.encode(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: pieces joined, ``▁`` → space; special ids are dropped.

        Raises :class:`~zor.common.errors.InputError` for an id outside the vocabulary.
        """
        out = []
        n = len(self.vocab)
        for i in ids:
            i = int(i)
            if not 0 <= i < n:
                raise InputError(f"token id {i} is outside the vocabulary: expected 0 ≤ id < {n}")
            if i >= len(SPECIALS):
                out.append(self.vocab[i])
        return "".join(out).replace(MARK, " ").strip()

    def unknown_chars(self, text: str) -> list[str]:
        """The distinct characters of normalized ``text`` outside the alphabet (spaces excluded)."""
        known = self._ids
        return sorted({ch for ch in normalize(text) if ch != " " and ch not in known})

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: ``{"kind", "version", "alphabet", "merges"}``."""
        return {"kind": _KIND, "version": _VERSION, "alphabet": "".join(self.alphabet),
                "merges": [[a, b] for a, b in self.merges]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "tokenizer") -> "SubwordTokenizer":
        """Rebuild from :meth:`to_dict` data; a malformed dict raises ModelFileError."""
        check_spec_header(data, _KIND, _VERSION, where, "tokenizer")
        alphabet, merges = data.get("alphabet"), data.get("merges")
        if not isinstance(alphabet, str) or not isinstance(merges, list):
            raise ModelFileError(f"{where}: expected 'alphabet' (str) and 'merges' (list of pairs)")
        try:
            return cls(list(alphabet), [tuple(m) for m in merges])
        except (ConfigError, TypeError) as exc:
            raise ModelFileError(f"{where}: corrupt tokenizer: {exc}") from None

    def __repr__(self) -> str:
        return f"SubwordTokenizer(vocab_size={self.vocab_size}, alphabet={len(self.alphabet)}, merges={len(self.merges)})"


def _merge_pair(sym: list[str], pair: tuple[str, str], joined: str) -> list[str]:
    out: list[str] = []
    k = 0
    a, b = pair
    while k < len(sym):
        if k + 1 < len(sym) and sym[k] == a and sym[k + 1] == b:
            out.append(joined)
            k += 2
        else:
            out.append(sym[k])
            k += 1
    return out


def _alphabet(units: Counter[str], vocab_size: int, min_char_count: int) -> tuple[list[str], int]:
    """(alphabet, merge budget): the characters seen at least ``min_char_count`` times (the most
    frequent ones when they alone overfill ``vocab_size``) and how many merges still fit."""
    chars: Counter[str] = Counter()
    for unit, n in units.items():
        for ch in unit:
            chars[ch] += n
    alphabet = sorted(ch for ch, n in chars.items() if n >= min_char_count)
    budget = vocab_size - len(SPECIALS) - len(alphabet)
    if budget < 0:
        alphabet = sorted(sorted(chars, key=lambda c: (-chars[c], c))[:vocab_size - len(SPECIALS)])
        budget = 0
    return alphabet, budget


def _learn_merges(units: Counter[str], alphabet: list[str], budget: int,
                  min_pair_count: int) -> list[tuple[str, str]]:
    """Up to ``budget`` merges, most frequent pair first (ties: the smaller pair), each seen
    at least ``min_pair_count`` times; pair counts are kept up to date incrementally."""
    known = set(alphabet)
    # Words as symbol lists; an unknown character is a barrier no merge crosses.
    words: list[list[str]] = []
    counts: list[int] = []
    for unit, n in sorted(units.items()):
        words.append([ch if ch in known else "\0" for ch in unit])
        counts.append(n)
    pair_count: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for w, (sym, n) in enumerate(zip(words, counts)):
        for pair in zip(sym, sym[1:]):
            if "\0" not in pair:
                pair_count[pair] += n
                where[pair].add(w)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    vocab = set(alphabet) | set(SPECIALS)
    while len(merges) < budget and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue                                   # stale entry
        if -neg < min_pair_count:
            break
        joined = pair[0] + pair[1]
        if joined in vocab:                            # same string from another split: skip the pair
            pair_count.pop(pair, None)
            continue
        merges.append(pair)
        vocab.add(joined)
        changed = _merge_everywhere(words, counts, where, pair, joined)
        pair_count.pop(pair, None)
        for p, d in changed.items():
            if d == 0 or p == pair:
                continue
            value = pair_count.get(p, 0) + d
            if value > 0:
                pair_count[p] = value
                heapq.heappush(heap, (-value, p))
            else:
                pair_count.pop(p, None)
    return merges


def _merge_everywhere(words: list[list[str]], counts: list[int], where: dict[tuple[str, str], set[int]],
                      pair: tuple[str, str], joined: str) -> Counter[tuple[str, str]]:
    """Merge ``pair`` into ``joined`` in every word holding it (in place; ``where`` learns the new
    pairs); returns how each pair's count changed."""
    changed: Counter[tuple[str, str]] = Counter()
    for w in sorted(where.pop(pair, ())):
        sym, n = words[w], counts[w]
        for old in zip(sym, sym[1:]):
            if "\0" not in old:
                changed[old] -= n
        new = _merge_pair(sym, pair, joined)
        words[w] = new
        for nxt in zip(new, new[1:]):
            if "\0" not in nxt:
                changed[nxt] += n
                where[nxt].add(w)
    return changed
