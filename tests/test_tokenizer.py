"""The subword tokenizer: hand-derived merges, round trips, unknown characters, bad input."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zor.common.errors import ConfigError, DTypeError, InputError, ModelFileError
from zor.common.tokenizer import (
    BOS,
    EOS,
    MARK,
    UNK,
    SubwordTokenizer,
    normalize,
    split_units,
)


def test_normalize_quotes_dashes_spaces():
    assert normalize("  “Ma”\u00a0—  ‘ya’…\t") == '"Ma" - \'ya\'...'
    assert normalize("e\u0301") == "é"                      # NFC
    assert normalize("a\u2581b") == "a_b"                   # the marker never enters as text
    assert normalize("") == ""


def test_split_units_marks_chunk_starts_and_cuts_punctuation():
    assert split_units("¿Quién es? in tlacatl") == [MARK + "¿", "Quién", MARK + "es", "?", MARK + "in", MARK + "tlacatl"]
    assert split_units("ka'waki' o̱") == [MARK + "ka'waki'", MARK + "o̱"]   # apostrophes and combining marks stay in words


def test_training_by_hand():
    # units: ▁aaa ×2, ▁ab ×1 → pair counts (a,a) 4, (▁,a) 3, (a,b) 1
    # merge 1: (a,a) → ▁aaa = [▁, aa, a]: (▁,aa) 2, (aa,a) 2 tie → smaller pair ('aa','a') first
    # merge 2: (aa,a) → [▁, aaa]; merge 3: (▁,aaa); then every pair count is 1 < min_pair_count 2
    tok = SubwordTokenizer.train(["aaa aaa", "ab"], vocab_size=100, min_char_count=1, min_pair_count=2)
    assert tok.alphabet == ["a", "b", MARK]
    assert tok.merges == [("a", "a"), ("aa", "a"), (MARK, "aaa")]
    assert tok.vocab[4:] == ["a", "b", MARK, "aa", "aaa", MARK + "aaa"]
    assert tok.encode("aaa ab") == [9, 6, 4, 5]
    assert tok.encode("aaa", bos=True, eos=True) == [BOS, 9, EOS]
    assert tok.decode([BOS, 9, 6, 4, 5, EOS]) == "aaa ab"


def test_vocab_size_caps_merges():
    tok = SubwordTokenizer.train(["aaa aaa", "ab"], vocab_size=8, min_char_count=1)
    assert tok.vocab_size == 8 and len(tok.merges) == 1


def test_rare_characters_are_unknown():
    tok = SubwordTokenizer.train(["abc abc", "abz"], vocab_size=50, min_char_count=2)
    assert "z" not in tok.alphabet
    ids = tok.encode("abz")
    assert ids[-1] == UNK
    assert tok.unknown_chars("zaq b") == ["q", "z"]
    assert tok.decode(ids) == "ab"                          # <unk> decodes to nothing


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["in", "calli", "atl", "¿", "?", ",", "tlen", "ma'", "ó"]), min_size=0, max_size=12),
       st.lists(st.booleans(), min_size=12, max_size=12))
def test_round_trip_of_known_text(words, spaces):
    tok = _TOK
    text = "".join(w + (" " if s else "") for w, s in zip(words, spaces))
    assert tok.decode(tok.encode(text)) == normalize(text)


_TOK = SubwordTokenizer.train(["in calli, in atl? ¿tlen ma' ó", "calli atl in tlen"] * 3, vocab_size=40)


def test_to_dict_round_trip_is_json():
    data = json.loads(json.dumps(_TOK.to_dict()))
    back = SubwordTokenizer.from_dict(data)
    assert back.vocab == _TOK.vocab
    assert back.encode("in calli tlen") == _TOK.encode("in calli tlen")


@pytest.mark.parametrize("bad", [
    None, [], {"kind": "sentencepiece"}, {"kind": "zor-bpe", "version": 99, "alphabet": "a", "merges": []},
    {"kind": "zor-bpe", "version": 1, "alphabet": 5, "merges": []},
    {"kind": "zor-bpe", "version": 1, "alphabet": "ab", "merges": [["a", "q"]]},
    {"kind": "zor-bpe", "version": 1, "alphabet": "ab", "merges": [["a", "b"], ["a", "b"]]},
    {"kind": "zor-bpe", "version": 1, "alphabet": "ab", "merges": [["a"]]},
])
def test_from_dict_refuses_malformed(bad):
    with pytest.raises(ModelFileError):
        SubwordTokenizer.from_dict(bad)


@pytest.mark.parametrize("kwargs", [{"vocab_size": 2}, {"vocab_size": 10.5}, {"min_char_count": 0},
                                    {"min_pair_count": True}])
def test_bad_training_settings(kwargs):
    with pytest.raises(ConfigError):
        SubwordTokenizer.train(["abc"], **kwargs)


def test_bad_input_types_and_ids():
    with pytest.raises(DTypeError, match="expected a str"):
        _TOK.encode(b"in calli")
    with pytest.raises(InputError, match="outside the vocabulary"):
        _TOK.decode([len(_TOK)])
    with pytest.raises(InputError):
        _TOK.decode([-1])
