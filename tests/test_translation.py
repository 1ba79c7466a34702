"""The engine side of translation: Zor step models trained by Zor's rule on a made-up parallel text."""

import itertools

import numpy as np
import pytest
import torch

from benchmarks.baselines.translation import BackpropStepModel
from zor import Layer, Zor
from zor.common.errors import CheckpointError, ConfigError
from zor.tasks.textdata import Pair
from zor.tasks.translation import (
    TranslationConfig,
    ZorTranslator,
    build_spec,
    step_data,
)

# A made-up language: one target word per source word, same order.
LEX = {"el": "in", "perro": "chichi", "gato": "mizton", "niño": "piltzin", "come": "quicua", "bebe": "quii",
       "ve": "quitta", "agua": "atl", "carne": "nacatl", "tortilla": "tlaxcalli"}


def _pairs():
    out = []
    for a, v, o in itertools.product(["perro", "gato", "niño"], ["come", "bebe", "ve"], ["agua", "carne", "tortilla"]):
        words = ["el", a, v, o]
        out.append(Pair(" ".join(words), " ".join(LEX[w] for w in words), f"doc-{a}"))
    return out


PAIRS = _pairs()
CFG = dict(source_vocab=60, target_vocab=60, hidden=64, window_dim=64, steps=400, batch_size=32, device="cpu",
           lr=3e-3, error_scaling=False, target_activation=0.5)


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    return ZorTranslator.train(PAIRS, TranslationConfig(**CFG))


def test_zor_rule_learns_the_training_pairs(trained):
    hyps = trained.translate([p.source for p in PAIRS])
    assert hyps == [p.target for p in PAIRS]
    assert trained.history["steps"] == 400
    errs = [v for _, v in trained.history["curve"]]        # every 50th step
    assert len(errs) == 8
    assert errs[-1] < 0.5 * errs[0]                     # Σ|one-hot − softmax| per step fell by more than half


def test_no_autograd_in_zor_training(trained):
    assert all(not p.requires_grad for p in trained.net.parameters())
    assert trained.net.config.rule == "gated"
    assert trained.spec.output == "logits"              # softmax read-out: the charges are logits


def test_translate_str_and_list_and_beam(trained):
    assert trained.translate("el gato bebe agua") == "in mizton quii atl"
    assert trained.translate(["el gato bebe agua"], beam=3) == ["in mizton quii atl"]
    assert trained.translate("") == ""


def test_checkpoint_round_trip_carries_the_spec(trained, tmp_path):
    path = tmp_path / "tr.zor"
    trained.save(path)
    back = ZorTranslator.load(path, device="cpu")
    assert back.spec.encoder == trained.spec.encoder
    assert back.net.task["name"] == "translate"
    x = back.spec.encoder.rows([back.spec.encoder.source([5, 6, 7])], [[]], [0])
    np.testing.assert_array_equal(back.step(x), trained.step(x))
    assert back.translate([p.source for p in PAIRS[:5]]) == [p.target for p in PAIRS[:5]]


def test_loading_a_non_translation_checkpoint(tmp_path):
    path = tmp_path / "ae.zor"
    Zor([Layer(4), Layer(3)], seed=0, device="cpu").save(path)
    with pytest.raises(CheckpointError, match="not a translation model"):
        ZorTranslator.load(path, device="cpu")


def test_network_must_fit_the_encoding(trained):
    with pytest.raises(ConfigError, match="does not fit"):
        ZorTranslator(Zor([Layer(4), Layer(3)], seed=0, device="cpu"), trained.spec)


def test_charges_readout_and_backprop_baseline_share_the_framing():
    cfg = TranslationConfig(**{**CFG, "readout": "charges", "steps": 50})
    spec = build_spec(PAIRS, cfg)
    data = step_data(PAIRS, spec)
    assert len(data) == sum(len(spec.target_tokenizer.encode(p.target)) + 1 for p in PAIRS)
    model = ZorTranslator.train(PAIRS, cfg, spec=spec, data=data)
    assert model.history["steps"] == 50 and model.spec.output == "probability"
    bp = BackpropStepModel(spec, hidden=64, lr=3e-3, seed=0, device="cpu")
    assert [m.shape for m in bp.net.parameters()] == [torch.Size([64, spec.encoder.width]),
                                                      torch.Size([spec.encoder.target_vocab, 64])]
    assert bp.spec.output == "logits"
    hist = bp.fit(data, steps=300, batch_size=32)
    assert hist["steps"] == 300
    assert bp.translate([p.source for p in PAIRS]) == [p.target for p in PAIRS]
    with pytest.raises(ConfigError):
        BackpropStepModel(spec, hidden=8, loss="hinge")


@pytest.mark.parametrize("kwargs", [{"hidden": 0}, {"steps": -1}, {"batch_size": 2.5}, {"time_budget": 0},
                                    {"readout": "max"}])
def test_bad_config(kwargs):
    with pytest.raises(ConfigError):
        TranslationConfig(**kwargs)


def test_fit_resumes_where_it_stopped():
    cfg = TranslationConfig(**{**CFG, "steps": 20})
    spec = build_spec(PAIRS, cfg)
    data = step_data(PAIRS, spec)
    once = ZorTranslator(ZorTranslator.make_network(spec, cfg), spec)
    once.fit(data, cfg)
    twice = ZorTranslator(ZorTranslator.make_network(spec, cfg), spec)
    twice.fit(data, cfg, steps=8)
    hist = twice.fit(data, cfg, steps=12)
    assert hist["steps"] == 20 and hist["seconds"] > 0
    for a, b in zip(once.net.weights, twice.net.weights):
        torch.testing.assert_close(a, b, rtol=0, atol=0)       # same batches in the same order


def test_sparse_batches_train_zor_like_dense_batches():
    from zor.tasks.translation import batch_input

    cfg = TranslationConfig(**{**CFG, "steps": 25})
    spec = build_spec(PAIRS, cfg)
    data = step_data(PAIRS, spec)
    rows = np.array([5, 1, 9])
    xs = batch_input(spec.encoder, data, rows, torch.device("cpu"), sparse=True)
    assert xs.is_sparse and xs.shape == (3, spec.encoder.width)
    np.testing.assert_array_equal(xs.to_dense().numpy(), spec.encoder.dense(data, rows))
    models = []
    for sparse in (False, True):
        c = TranslationConfig(**{**CFG, "steps": 25, "sparse_input": sparse})
        models.append(ZorTranslator.train(PAIRS, c, spec=spec, data=data))
    for a, b in zip(models[0].net.weights, models[1].net.weights):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_backprop_baseline_on_sparse_batches_learns_the_same_way():
    cfg = TranslationConfig(**CFG)
    spec = build_spec(PAIRS, cfg)
    data = step_data(PAIRS, spec)
    dense = BackpropStepModel(spec, hidden=64, lr=3e-3, seed=0, device="cpu")
    sparse = BackpropStepModel(spec, hidden=64, lr=3e-3, seed=0, device="cpu", sparse_input=True)
    dense.fit(data, steps=30, batch_size=32)
    sparse.fit(data, steps=30, batch_size=32)
    for a, b in zip(dense.net.parameters(), sparse.net.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    sparse.fit(data, steps=270, batch_size=32)
    assert sparse.translate([p.source for p in PAIRS]) == [p.target for p in PAIRS]


def test_weight_decay_reaches_both_optimizers():
    cfg = TranslationConfig(**{**CFG, "weight_decay": 0.1})
    spec = build_spec(PAIRS, cfg)
    net = ZorTranslator.make_network(spec, cfg)
    assert net.optimizer.param_groups[0]["weight_decay"] == 0.1
    assert isinstance(BackpropStepModel(spec, hidden=8, device="cpu").opt, torch.optim.Adam)
    bp = BackpropStepModel(spec, hidden=8, device="cpu", weight_decay=0.1)
    assert isinstance(bp.opt, torch.optim.AdamW) and bp.opt.param_groups[0]["weight_decay"] == 0.1
