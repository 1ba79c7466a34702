"""Torch-free text pieces of translation: corpus splits, step features, decoding, baselines, metrics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.baselines.text import TranslationMemory, char_ngrams, copy_source
from zor.common.errors import (
    ConfigError,
    DataError,
    DTypeError,
    InputError,
    ModelFileError,
)
from zor.common.textdecode import (
    TranslationSpec,
    beam_search,
    greedy,
    log_probs,
    split_long,
    translate_texts,
)
from zor.common.textfeatures import StepEncoder, position_bucket
from zor.common.textmetrics import score
from zor.common.tokenizer import BOS, EOS, SubwordTokenizer
from zor.tasks.textdata import Pair, load_pairs, pairs_from_rows, split_by_document

# ---------------------------------------------------------------------- corpus


def test_pairs_from_rows_normalises_and_drops_empty():
    rows = [["  la  casa ", "in calli", "v", "doc1"], ["", "atl", "v", "doc1"], ["agua", " ", "v", "d"],
            ["él", "yehua", "", ""]]
    pairs = pairs_from_rows(rows)
    assert pairs == [Pair("la casa", "in calli", "doc1", "v"), Pair("él", "yehua", "(no document)", "")]
    assert pairs_from_rows([["in calli", "la casa", "v", "d"]], 1, 0)[0].source == "la casa"


@pytest.mark.parametrize("rows", [[["only one column"]], [[1, 2, "v", "d"]], ["not a row"]])
def test_pairs_from_rows_refuses_malformed(rows):
    with pytest.raises(DataError):
        pairs_from_rows(rows)


def _corpus(sizes):
    return [Pair(f"s{d}-{k}", f"t{d}-{k}", f"doc{d}") for d, n in enumerate(sizes) for k in range(n)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=3, max_size=25), st.integers(0, 5))
def test_split_never_shares_a_document(sizes, seed):
    pairs = _corpus(sizes)
    try:
        splits = split_by_document(pairs, dev=0.1, test=0.1, seed=seed)
    except DataError:
        return                                                 # too few documents for three splits: refused clearly
    docs = [{p.document for p in v} for v in splits.values()]
    assert not (docs[0] & docs[1]) and not (docs[0] & docs[2]) and not (docs[1] & docs[2])
    assert sorted(p.source for v in splits.values() for p in v) == sorted(p.source for p in pairs)


def test_split_shares_and_explicit_test_documents():
    pairs = _corpus([10] * 20)                                 # 200 pairs, 20 documents of 10
    s = split_by_document(pairs, dev=0.1, test=0.2, seed=3)
    assert (len(s["train"]), len(s["dev"]), len(s["test"])) == (140, 20, 40)
    s = split_by_document(pairs, dev=0.1, test=0.1, test_documents=["doc0", "doc7"])
    assert {p.document for p in s["test"]} == {"doc0", "doc7"} and len(s["dev"]) == 20
    assert split_by_document(pairs, seed=1) == split_by_document(pairs, seed=1)   # deterministic


@pytest.mark.parametrize("kwargs", [{"dev": 1.0}, {"test": -0.1}, {"dev": 0.6, "test": 0.5}, {"dev": True},
                                    {"test_documents": ["nope"]}])
def test_split_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        split_by_document(_corpus([5] * 10), **kwargs)


def test_split_too_few_documents():
    with pytest.raises(DataError, match="documents"):
        split_by_document(_corpus([50, 50]), dev=0.1, test=0.1)


def test_load_pairs_unknown_pair():
    with pytest.raises(ConfigError, match="es-nah"):
        load_pairs("es-xx")


def test_real_axolotl_corpus_splits_by_document():
    pytest.importorskip("elotl")
    pairs = load_pairs("es-nah")
    assert len(pairs) > 15000 and len({p.document for p in pairs}) >= 30
    s = split_by_document(pairs)
    train_docs = {p.document for p in s["train"]}
    assert not train_docs & {p.document for p in s["test"]} and not train_docs & {p.document for p in s["dev"]}
    assert all(p.source and p.target for p in s["test"])


# ---------------------------------------------------------------------- features


def test_position_buckets():
    assert [position_bucket(t, 16) for t in (0, 1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 16, 24, 10_000)] == \
        [0, 1, 2, 3, 4, 4, 5, 5, 6, 6, 7, 8, 9, 15]


def _hash(x, o, w, dim):
    return ((x + 3) * 2654435761 + (o + w) * 2246822519) % 2 ** 32 % dim


def test_step_row_by_hand():
    enc = StepEncoder(source_vocab=10, target_vocab=8, history=2, window=1, window_dim=16, length_ratio=2.0,
                      position_buckets=4)
    assert enc.offsets == {"bag": 0, "window": 10, "history": 26, "position": 42, "progress": 46}
    assert enc.width == 50 and enc.fixed_count == 7         # 3 window + 2 history + 2 position
    ctx = enc.source([7, 5, 7])                                 # distinct {5, 7}: 1/sqrt(2)
    x = enc.rows([ctx], [[6, 4, 3]], [3])[0]                   # t = 3: p = floor(3 / 2) = 1
    want = np.zeros(50, np.float32)
    want[[5, 7]] = 1 / math.sqrt(2)
    for o, tok in ((-1, 7), (0, 5), (1, 7)):
        want[10 + _hash(tok, o, 1, 16)] = 1
    want[26 + 3] = 1                                           # y_{t-1} = 3
    want[26 + 8 + 4] = 1                                       # y_{t-2} = 4
    want[42 + 3] = 1                                           # position bucket of 3
    want[46 + min(3, int(4 * (3 / (2.0 * 3)) / 2))] = 1        # progress 0.5 → bucket 1
    np.testing.assert_allclose(x, want)
    x0 = enc.rows([ctx], [[]], [0])[0]                         # step 0: history is <s>, <s>
    assert x0[26 + BOS] == 1 and x0[26 + 8 + BOS] == 1
    assert x0[10 + _hash(-1, -1, 1, 16)] == 1                  # before the sentence


def test_dense_training_rows_match_decoding_rows():
    enc = StepEncoder(source_vocab=12, target_vocab=9, history=2, window=2, window_dim=32, length_ratio=1.3)
    srcs, tgts = [[4, 5, 6], [7], [8, 8, 9, 10, 11]], [[4, 5], [6, 7, 8], [4]]
    data = enc.steps(srcs, tgts, EOS)
    assert len(data) == sum(len(t) + 1 for t in tgts)
    assert data.target.tolist() == [4, 5, EOS, 6, 7, 8, EOS, 4, EOS]
    dense = enc.dense(data, np.arange(len(data)))
    rows = []
    for s, t in zip(srcs, tgts):
        for k in range(len(t) + 1):
            rows.append(enc.rows([enc.source(s)], [t[:k]], [k])[0])
    np.testing.assert_array_equal(dense, np.stack(rows))
    np.testing.assert_array_equal(enc.dense(data, np.array([8, 0])), np.stack([rows[8], rows[0]]))


@pytest.mark.parametrize("kwargs", [{"history": -1}, {"window_dim": 0}, {"length_ratio": 0.0},
                                    {"length_ratio": float("nan")}, {"source_vocab": 2.5}, {"position_buckets": True}])
def test_encoder_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        StepEncoder(**{"source_vocab": 10, "target_vocab": 10, **kwargs})


def test_encoder_source_ids_out_of_range_and_spec_round_trip():
    enc = StepEncoder(source_vocab=10, target_vocab=10)
    with pytest.raises(ConfigError, match=r"\[0, 10\)"):
        enc.source([3, 10])
    assert StepEncoder.from_dict(enc.to_dict()) == enc
    with pytest.raises(ModelFileError):
        StepEncoder.from_dict({"kind": "zor-step", "version": 1})
    with pytest.raises(ModelFileError):
        StepEncoder.from_dict({**enc.to_dict(), "history": -3})


# ---------------------------------------------------------------------- decoding

_SRC = SubwordTokenizer.train(["uno dos tres", "uno dos"], vocab_size=30, min_char_count=1)
_TGT = SubwordTokenizer.train(["ce ome yei", "ce ome"], vocab_size=30, min_char_count=1)


def _spec(**kw):
    enc = StepEncoder(source_vocab=_SRC.vocab_size, target_vocab=_TGT.vocab_size, history=1, window=0,
                      window_dim=8, length_ratio=1.0)
    return TranslationSpec(_SRC, _TGT, enc, **kw)


def _table_step(spec, table, output="probability"):
    """A step function from {previous token: {next token: score}} (the history block says the previous token)."""
    v, h = spec.encoder.target_vocab, spec.encoder.offsets["history"]

    def step(x):
        out = np.full((len(x), v), 0.0 if output == "probability" else -20.0, np.float32)
        for r in range(len(x)):
            prev = int(np.flatnonzero(x[r, h:h + v])[0])
            for tok, s in table.get(prev, {}).items():
                out[r, tok] = s
        return out
    return step


def test_log_probs_by_hand():
    lp = log_probs(np.array([[0.5, 0.25, 0.25, -1.0]]), "probability")
    np.testing.assert_allclose(np.exp(lp[0, :3]) * (1.0001), [0.5, 0.25, 0.25], rtol=1e-3)
    np.testing.assert_allclose(log_probs(np.array([[0.0, math.log(3.0)]]), "logits"), [[math.log(0.25), math.log(0.75)]])


def test_greedy_and_beam_by_hand():
    spec = _spec()
    a, b, c = 10, 11, 12
    # greedy takes a (0.6) then only weak continuations; the beam finds b → c → end, with higher product
    table = {BOS: {a: 0.6, b: 0.4}, a: {c: 0.3, EOS: 0.3, b: 0.4}, b: {c: 0.95, EOS: 0.05}, c: {EOS: 1.0}}
    step = _table_step(spec, table)
    ctx = [spec.encoder.source([5, 6])]
    assert greedy(step, spec.encoder, ctx, [10]) == [[a, b, c]]
    # beam 2: a(.6), b(.4) → a b(.24), b c(.38) → b c </s>: .38 beats a b c </s> (.228)
    assert beam_search(step, spec.encoder, ctx, [10], beam=2, length_penalty=0.0) == [[b, c]]
    assert greedy(step, spec.encoder, ctx, [2]) == [[a, b]]                     # max length stops
    loop = _table_step(spec, {BOS: {a: 1.0}, a: {a: 0.9, EOS: 0.1}})
    assert greedy(loop, spec.encoder, ctx, [6]) == [[a] * 6]
    # q = 2: the second a makes the bigram (a, a); a third would repeat it, so </s> (0.1) wins
    assert greedy(loop, spec.encoder, ctx, [6], no_repeat_ngram=2) == [[a, a]]
    with pytest.raises(ConfigError):
        beam_search(step, spec.encoder, ctx, [10], beam=0)


def test_length_penalty_by_hand():
    spec = _spec()
    a, c, d = 10, 12, 13
    # [a] </s>: log .55 = −0.598 over 2 tokens; [c, d] </s>: log .45 = −0.799 over 3
    table = {BOS: {a: 0.55, c: 0.45}, a: {EOS: 1.0}, c: {d: 1.0}, d: {EOS: 1.0}}
    step = _table_step(spec, table)
    ctx = [spec.encoder.source([5, 6])]
    assert beam_search(step, spec.encoder, ctx, [10], beam=2, length_penalty=0.0) == [[a]]      # −0.598 > −0.799
    assert beam_search(step, spec.encoder, ctx, [10], beam=2, length_penalty=1.0) == [[c, d]]   # −0.266 > −0.299
    assert spec.decoding["length_penalty"] == 3.0                                 # the default (dev-chosen)


def test_step_function_of_wrong_shape():
    spec = _spec()
    with pytest.raises(ConfigError, match="shape"):
        greedy(lambda x: np.zeros((len(x), 3)), spec.encoder, [spec.encoder.source([5])], [4])


def test_split_long_by_hand():
    count = lambda s: len(s.split())
    assert split_long("a b. c d e; f", count, 3) == ["a b.", "c d e;", "f"]
    assert split_long("a b, c d, e", count, 2) == ["a b,", "c d,", "e"]
    assert split_long("a b c d e", count, 2) == ["a b", "c", "d e"]
    assert split_long("a b. c", count, 3) == ["a b. c"]                         # within the limit: one piece
    assert split_long("a. b c d, e", count, 2) == ["a.", "b", "c d,", "e"]      # sentence, comma, then halves
    with pytest.raises(InputError, match="single word"):
        split_long("abcdef", lambda s: len(s), 3)


def test_translate_texts_bad_input_behaviour():
    spec = _spec(max_source_tokens=4)
    calls = []

    def step(x):
        calls.append(len(x))
        out = np.zeros((len(x), spec.encoder.target_vocab), np.float32)
        out[:, EOS] = 1.0
        out[:, ce] = np.where(x[:, spec.encoder.offsets["position"]] > 0, 2.0, 0.0)   # "ce", then end
        return out

    [ce] = _TGT.encode("ce")
    one = "ce"
    assert translate_texts(["", "   "], spec, step) == ["", ""]                      # empty → "" and no model call
    assert calls == []
    with pytest.raises(InputError, match="none of its characters"):
        translate_texts(["uno", "жжж"], spec, step)
    assert translate_texts(["uno жж"], spec, step) == [one]                           # some unknown: fine
    long = "uno dos. uno dos. uno"            # ▁uno ▁dos . ×2, ▁uno: 7 tokens > 4 → three sentences
    assert translate_texts([long], spec, step) == [" ".join([one] * 3)]
    with pytest.raises(InputError, match="at most 4"):
        translate_texts([long], spec, step, long="error")
    with pytest.raises(DTypeError):
        translate_texts("uno", spec, step)
    with pytest.raises(DTypeError):
        translate_texts(["uno", 3], spec, step)
    with pytest.raises(ConfigError):
        translate_texts(["uno"], spec, step, batch_size=0)


def test_spec_task_round_trip_and_foreign_tasks():
    spec = _spec(source_language="es", target_language="nah")
    back = TranslationSpec.from_task(spec.to_task())
    assert back.encoder == spec.encoder and back.target_tokenizer.vocab == spec.target_tokenizer.vocab
    assert back.source_language == "es" and back.max_len(3) == min(128, math.ceil(2 * 1.0 * 3) + 4)
    for task in ({"name": "reconstruct"}, {"name": "translate"}, None, "translate"):
        with pytest.raises(ModelFileError, match="not a translation model"):
            TranslationSpec.from_task(task)
    broken = spec.to_task()
    del broken["translate"]["features"]
    with pytest.raises(ModelFileError, match="features"):
        TranslationSpec.from_task(broken)
    with pytest.raises(ConfigError):
        TranslationSpec(_SRC, _TGT, StepEncoder(source_vocab=99, target_vocab=_TGT.vocab_size))


# ---------------------------------------------------------------------- baselines and metrics


def test_translation_memory_and_copy_source():
    tm = TranslationMemory(["la casa blanca", "el agua fría", "uno dos"], ["in calli iztac", "in atl cecec", "ce ome"])
    assert tm.nearest("la casa")[0] == 0 and tm.nearest("agua")[0] == 1
    assert tm.translate(["el agua", "", "dos"]) == ["in atl cecec", "", "ce ome"]
    assert copy_source(["  la  casa "]) == ["la casa"]
    assert "▁la" in char_ngrams("La casa")
    with pytest.raises(ConfigError):
        TranslationMemory([], [])


def test_scores_by_hand():
    pytest.importorskip("sacrebleu")
    s = score(["in calli", "ce"], ["in calli", "ce"])
    assert s == {"chrf": 100.0, "chrf++": 100.0, "bleu": pytest.approx(0.0, abs=100.0)} or s["chrf"] == 100.0
    assert score(["zzz"], ["in calli"])["chrf"] == 0.0
    with pytest.raises(InputError):
        score(["a"], ["a", "b"])
    with pytest.raises(InputError):
        score([], [])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(0, 11), min_size=0, max_size=9),
                          st.lists(st.integers(4, 8), min_size=0, max_size=9)), min_size=1, max_size=4),
       st.floats(0.3, 3.0), st.integers(0, 3), st.integers(0, 3))
def test_vectorised_training_rows_equal_decoding_rows(pairs, ratio, window, history):
    enc = StepEncoder(source_vocab=12, target_vocab=9, history=history, window=window, window_dim=16,
                      length_ratio=ratio, position_buckets=5)
    data = enc.steps([s for s, _ in pairs], [t for _, t in pairs], EOS)
    want = [enc.rows([enc.source(s)], [t[:k]], [k])[0] for s, t in pairs for k in range(len(t) + 1)]
    np.testing.assert_array_equal(enc.dense(data, np.arange(len(data))), np.stack(want))


def test_events_are_the_nonzeros_of_dense_and_colliding_window_slots_hold_one():
    # window_dim 2: the 5 window tokens of a step must collide; the dense form holds 1 there, not a sum
    enc = StepEncoder(source_vocab=12, target_vocab=9, history=2, window=2, window_dim=2, length_ratio=1.0)
    data = enc.steps([[4, 5, 6, 7], [8]], [[4, 5, 6], [7]], EOS)
    rows = np.array([3, 0, 5, 1])
    r, c, v = enc.events(data, rows)
    dense = enc.dense(data, rows)
    assert (np.diff(r * enc.width + c) > 0).all()               # sorted, each (row, column) once
    rebuilt = np.zeros_like(dense)
    rebuilt[r, c] = v
    np.testing.assert_array_equal(rebuilt, dense)
    assert np.count_nonzero(dense) == r.size
    assert set(np.unique(dense[:, enc.offsets["window"]:enc.offsets["window"] + 2])) <= {0.0, 1.0}
