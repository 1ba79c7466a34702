"""benchmarks/translation.py and examples/translate.py: smoke runs on the real corpus, helpers, usage errors."""

import importlib.util
import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from benchmarks import translation as bench
from zor.common.tokenizer import SubwordTokenizer
from zor.tasks.textdata import Pair


def test_train_equal_time_interleaves_slices():
    calls = []

    def model(name, speed):
        hist = {"seconds": 0.0}

        def fit(seconds):
            calls.append((name, seconds))
            hist["seconds"] += seconds * speed            # a model may overshoot its slice a little
        return fit, lambda: hist

    models = {"a": model("a", 1.0), "b": model("b", 1.5)}
    bench.train_equal_time(models, budget=25.0, slice_s=10.0, show=False)
    assert calls == [("a", 10.0), ("b", 10.0), ("a", 10.0), ("b", 10.0), ("a", 5.0)]
    assert models["a"][1]()["seconds"] == 25.0 and models["b"][1]()["seconds"] == 30.0


def test_settings_for_takes_the_config_width_unless_given():
    from zor.tasks.translation import TranslationConfig

    assert TranslationConfig(**bench.settings_for(False, 1000, None)).hidden == TranslationConfig().hidden == 512
    assert TranslationConfig(**bench.settings_for(False, 1000, 300)).hidden == 300
    assert bench.settings_for(True, 1000, 300)["hidden"] == 32                       # --quick: a tiny model


def test_interleaved_speeds_by_hand():
    calls = []
    clock = {"a": iter([0.2, 0.4, 0.1]), "ref": iter([2.0, 1.0, 1.0])}

    def run(name, tokens):
        def one():
            calls.append(name)
            return next(clock[name]), tokens
        return one

    out = bench.interleaved_speeds({("a", 1): run("a", 50), ("ref", 1): run("ref", 40)}, sentences=10, rounds=3)
    assert calls == ["a", "ref"] * 3                                               # one pass each, in turn
    a, ref = out
    assert a["ms_per_sentence"] == pytest.approx(20.0) and a["tokens_per_s"] == pytest.approx(250.0)  # median 0.2 s
    assert a["speedup_vs_engine"] == pytest.approx(10.0)   # per round 10, 2.5, 10 → 10 (the medians' ratio is 5)
    assert ref["speedup_vs_engine"] == 1.0 and ref["seconds"] == [2.0, 1.0, 1.0]


def test_typical_takes_the_corpus_median():
    tok = SubwordTokenizer.train(["a b c d e f g h"], vocab_size=30, min_char_count=1, min_pair_count=1)
    assert tok.encode("a b") == [tok.vocab.index("▁a"), tok.vocab.index("▁b")]      # one token per word
    corpus = [Pair(" ".join("abcdefgh"[:n]), "x", "d") for n in (2, 4, 4, 4, 8)]      # median 4 tokens
    keep, med = bench.typical(corpus + [Pair("a b c", "x", "d")], corpus, tok, spread=0.25, least=2)
    assert med == 4.0 and [len(p.source.split()) for p in keep] == [4, 4, 4, 3]    # |3 − 4| ≤ 1
    keep, _ = bench.typical([corpus[0], corpus[4]], corpus, tok, least=1)           # none typical: the closest
    assert [len(p.source.split()) for p in keep] == [2]


def test_quick_run_writes_json(tmp_path):
    pytest.importorskip("elotl")
    pytest.importorskip("sacrebleu")
    out = tmp_path / "t.json"
    result = CliRunner().invoke(bench.main, ["--quick", "--pairs", "es-oto", "--max-test", "8", "--beam", "1",
                                             "--no-progress", "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["benchmark"] == "translation" and data["quick"] is True
    [pair] = data["pairs"]
    assert pair["pair"] == "es-oto" and pair["test_sentences"] == 8
    methods = {r["method"] for r in pair["rows"] + pair["runtime"]}
    assert methods == {"copy", "tm", "zor", "zor-charges", "backprop", "backprop-mse", "backprop-sparse",
                       "zor runtime float32", "zor runtime int8"}
    for r in pair["rows"] + pair["runtime"]:
        assert 0.0 <= r["chrf"] <= 100.0 and 0.0 <= r["bleu"] <= 100.0
    trained = [r for r in pair["rows"] if r.get("steps")]
    assert len(trained) == 5 and all(r["train_s"] >= 1.0 for r in trained)
    assert {(s["model"], s["batch"]) for s in pair["speed"]} == {("runtime float32", 1), ("runtime float32", 32),
                                                                  ("runtime int8", 1), ("runtime int8", 32),
                                                                  ("engine float32 (torch)", 1)}
    assert set(pair["goals"]) >= {"zor_chrf_ge_tm", "zor_chrf_ge_backprop", "zor_chrf_ge_backprop_sparse",
                                  "int8_chrf_drop", "int8_batch1_ms"}
    assert pair["exports"]["float32"]["verification_passed"] is True
    agreement = pair["exports"]["int8"]["spike_agreement"]
    assert len(agreement) >= 2 and all(0.9 <= a <= 1.0 for a in agreement)    # the exporter's int8 measurement
    assert "Goals:" in result.output and "Runtime speed" in result.output


@pytest.mark.parametrize("args, message", [(["--pairs", "es-xx"], "--pairs"), (["--pairs", ""], "--pairs"),
                                           (["--json", "/nonexistent-folder/x.json"], "does not exist"),
                                           (["--beam", "0"], "--beam")])
def test_usage_errors_exit_2(args, message):
    result = CliRunner().invoke(bench.main, args)
    assert result.exit_code == 2 and message in result.output


def test_example_runs_quick(tmp_path):
    pytest.importorskip("elotl")
    pytest.importorskip("sacrebleu")
    path = Path(__file__).resolve().parents[1] / "examples" / "translate.py"
    spec = importlib.util.spec_from_file_location("zor_example_translate", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)

    assert example.main(["--out", str(tmp_path / "ex"), "--quick", "--pair", "es-oto"]) == 0
    summary = json.loads((tmp_path / "ex" / "summary.json").read_text())
    assert summary["files"] == {"float32": "es-oto-float32.onnx", "int8": "es-oto-int8.onnx"}
    assert (tmp_path / "ex" / "es-oto.zor").is_file() and summary["speed"]["ms_per_sentence"] > 0


def test_export_excuses_only_output_rounding(tmp_path, monkeypatch):
    ex = pytest.importorskip("zor.export")
    import numpy as np
    import torch
    from test_translation import CFG, PAIRS

    from zor.common.errors import VerificationError
    from zor.tasks.translation import TranslationConfig, ZorTranslator, step_data

    torch.set_num_threads(1)
    model = ZorTranslator.train(PAIRS, TranslationConfig(**{**CFG, "steps": 50}))
    ckpt = tmp_path / "m.zor"
    model.save(ckpt)
    data = step_data(PAIRS, model.spec)
    rows = model.spec.encoder.dense(data, np.arange(len(data)))
    real, calls = ex.export, []

    def strict(*args, **kwargs):                      # the exporter's absolute 1e-5 fails on the output values
        calls.append(kwargs.get("verify_model", True))
        if kwargs.get("verify_model", True):
            raise VerificationError("verification failed", report={"failures": [
                "output: max abs diff 1.14e-05 past tolerance 1e-05 (1 of 256000 values)"]})
        return real(*args, **kwargs)

    monkeypatch.setattr(ex, "export", strict)
    res = bench.export_translation(ckpt, tmp_path / "m.onnx", "none", rows)
    assert calls == [True, False] and res["verification_passed"] is True
    assert res["strict_failure"].startswith("output:") and "max|o|" in res["check"]
    assert res["spike_agreement"] == [1.0, 1.0, 1.0]

    def spikes(*args, **kwargs):                      # a spike mismatch is never excused
        raise VerificationError("verification failed", report={"failures": ["layer 1: 3 spike mismatches"]})

    monkeypatch.setattr(ex, "export", spikes)
    with pytest.raises(VerificationError):
        bench.export_translation(ckpt, tmp_path / "n.onnx", "none", rows)
    assert not (tmp_path / "n.onnx").exists()


# ----------------------------------------------------------------------------- benchmarks/translation_seeds.py
def _seeds_run(seed, zor, bp, bps, tm=18.0, pair="es-nah"):
    rows = [{"method": "copy", "chrf": 20.0}, {"method": "tm", "chrf": tm}, {"method": "zor", "chrf": zor},
            {"method": "backprop", "chrf": bp}, {"method": "backprop-sparse", "chrf": bps}]
    return {"pair": pair, "seed": seed, "rows": rows}


def test_seeds_summary_by_hand():
    from benchmarks import translation_seeds as ts

    s = ts.summarise([_seeds_run(0, 25.0, 26.0, 26.5, tm=20.0), _seeds_run(1, 30.0, 29.0, 28.0, tm=22.0),
                      _seeds_run(2, 27.0, 27.5, 26.0, tm=21.0)])
    assert [(g["best_backprop"], g["gap"]) for g in s["gaps"]] == [("backprop-sparse", -1.5), ("backprop", 1.0),
                                                                     ("backprop", -0.5)]
    assert s["median_gap"] == -0.5 and s["zor_ahead_splits"] == 1 and s["splits"] == 3
    assert s["median_chrf"]["zor"] == 27.0 and s["median_chrf"]["backprop"] == 27.5
    assert [g["zor_vs_tm"] for g in s["gaps"]] == [5.0, 8.0, 6.0]


def test_seeds_pool_by_hand():
    from benchmarks import translation_seeds as ts

    # split 0 twice, split 1 once: gaps to backprop +1.0, -0.02, +0.5; to backprop-sparse -1.0, -0.52, -0.5
    p = ts.pool([_seeds_run(0, 25.0, 24.0, 26.0), _seeds_run(1, 30.0, 29.5, 30.5), _seeds_run(0, 26.0, 26.02, 26.52)])
    assert p["split_runs"] == 3
    assert [(r["split"], r["runs"]) for r in p["per_split"]] == [(0, 2), (1, 1)]
    assert p["per_split"][0]["zor"] == pytest.approx(25.5) and p["per_split"][0]["backprop"] == pytest.approx(25.01)
    assert p["mean_chrf"]["zor"] == pytest.approx(27.0) and p["mean_chrf"]["tm"] == pytest.approx(18.0)
    bp, bps = p["versus"]["backprop"], p["versus"]["backprop-sparse"]
    assert bp["gaps"] == pytest.approx([1.0, 0.5, -0.02])
    assert bp["mean_gap"] == pytest.approx(1.48 / 3)
    assert (bp["ahead"], bp["level"], bp["behind"]) == (2, 1, 0)
    assert (bps["ahead"], bps["level"], bps["behind"]) == (0, 0, 3)
    with pytest.raises(click.UsageError, match="one language pair"):
        ts.pool([_seeds_run(0, 1.0, 1.0, 1.0), _seeds_run(0, 1.0, 1.0, 1.0, pair="es-oto")])


def test_seeds_pool_cli(tmp_path):
    from benchmarks import translation_seeds as ts

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, run in ((a, _seeds_run(0, 25.0, 24.0, 26.0)), (b, _seeds_run(0, 27.0, 26.0, 26.0))):
        path.write_text(json.dumps({"benchmark": "translation_seeds", "quick": False, "runs": [run]}))
    out = tmp_path / "pool.json"
    result = CliRunner().invoke(ts.main, ["--pool", str(a), "--pool", str(b), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "zor − backprop: mean +1.00 chrF; ahead on 2" in result.output
    assert "zor − backprop-sparse: mean +0.00 chrF; ahead on 1, level (±0.05) on 0, behind on 1" in result.output
    assert json.loads(out.read_text())["pool"]["per_split"][0]["zor"] == 26.0


@pytest.mark.parametrize("content, message", [
    ("{not json", "expected a JSON file"),
    (json.dumps({"benchmark": "translation", "runs": []}), "translation_seeds run"),
    (json.dumps({"benchmark": "translation_seeds", "runs": [{"seed": 0, "rows": [{"method": "zor", "chrf": 1}]}]}),
     "number for zor, backprop, backprop-sparse"),
    (json.dumps({"benchmark": "translation_seeds", "runs": [{"seed": 0, "rows": [
        {"method": "zor", "chrf": None}, {"method": "backprop", "chrf": 1.0},
        {"method": "backprop-sparse", "chrf": 1.0}]}]}),
     "got run 0 with methods ['backprop', 'backprop-sparse']"),
    (json.dumps({"benchmark": "translation_seeds", "quick": True, "runs": [_seeds_run(0, 1.0, 1.0, 1.0)]}), "--quick"),
    (json.dumps({"benchmark": "translation_seeds", "runs": [7]}), "got run 0 with methods []"),
])
def test_seeds_pool_rejects_foreign_files(tmp_path, content, message):
    from benchmarks import translation_seeds as ts

    f = tmp_path / "x.json"
    f.write_text(content)
    result = CliRunner().invoke(ts.main, ["--pool", str(f)])
    assert result.exit_code == 2 and message in result.output
    missing = CliRunner().invoke(ts.main, ["--pool", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "expected a JSON file" in missing.output


def test_seeds_quick_run_writes_json(tmp_path):
    pytest.importorskip("elotl")
    pytest.importorskip("sacrebleu")
    from benchmarks import translation_seeds as ts

    out = tmp_path / "s.json"
    result = CliRunner().invoke(ts.main, ["--quick", "--pair", "es-oto", "--seeds", "0,3", "--no-progress",
                                          "--json", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["seed"] for r in data["runs"]] == [0, 3]
    assert data["runs"][0]["test_documents"] != data["runs"][1]["test_documents"]     # other splits
    for run in data["runs"]:
        assert [r["method"] for r in run["rows"]] == ["copy", "tm", "zor", "backprop", "backprop-sparse"]
        assert all(0.0 <= r["chrf"] <= 100.0 for r in run["rows"])
    assert data["summary"]["splits"] == 2 and "median gap" in result.output


@pytest.mark.parametrize("args, message", [(["--seeds", "1,x"], "--seeds"), (["--seeds", "-1"], "--seeds"),
                                           (["--seeds", "2,2"], "distinct"), (["--pair", "en-fr"], "--pair")])
def test_seeds_usage_errors_exit_2(args, message):
    from benchmarks import translation_seeds as ts

    result = CliRunner().invoke(ts.main, ["--quick", *args])
    assert result.exit_code == 2 and message in result.output
