"""The image-task benchmarks run end to end with --quick and write valid JSON; their backprop
baselines learn and refuse bad input; usage errors exit 2."""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks import classification, colorization, denoising, depth
from benchmarks.baselines.images import CNNClassifier, MLPClassifier, MLPRegressor
from zor.common.errors import ConfigError, ShapeError


def invoke(main, args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_classification_quick(tmp_path):
    out = tmp_path / "c.json"
    r = invoke(classification.main, ["--quick", "--no-progress", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["config"]["budgets_s"] == {"10": 0.2, "100": 0.2}
    assert {(row["labels"], row["method"]) for row in data["rows"]} == \
        {(n, m) for n in (10, 100) for m in ("zor", "zor-conv", "mlp", "cnn")}
    assert all(0.0 < row["accuracy"] <= 100.0 and row["steps"] >= 1 for row in data["rows"])
    assert [g["labels"] for g in data["goals"]] == [10, 100] and all(g["goal"] == "ahead" for g in data["goals"])
    assert "Goals (best Zor vs best backprop" in r.output
    # one seed: the seed-by-seed difference is the difference of the two accuracies
    acc = {(row["labels"], row["method"]): row["accuracy"] for row in data["rows"]}
    for g, p in zip(data["goals"], data["paired"]):
        assert (p["labels"], p["zor"], p["backprop"], p["seeds"]) == (g["labels"], g["best_zor"], g["best_backprop"], 1)
        assert p["median_difference"] == pytest.approx(acc[(g["labels"], g["best_zor"])]
                                                       - acc[(g["labels"], g["best_backprop"])])
    assert "Seed by seed" in r.output


def test_classification_equal_steps(tmp_path):
    out = tmp_path / "s.json"
    r = invoke(classification.main, ["--quick", "--no-progress", "--labels", "10", "--equal-steps", "3",
                                     "--methods", "zor,mlp", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert [row["steps"] for row in data["rows"]] == [3, 3] and data["config"]["equal_steps"] == 3
    assert "EQUAL STEPS" in r.output
    assert data["config"]["weight_average"] == classification.WEIGHT_AVERAGE and "β = 0.995" in r.output
    r = invoke(classification.main, ["--quick", "--no-progress", "--labels", "10", "--equal-steps", "2",
                                     "--methods", "mlp", "--weight-average", "0"])
    assert r.exit_code == 0 and "last iterate (no weight average)" in r.output
    r = invoke(classification.main, ["--quick", "--no-progress", "--weight-average", "1"])
    assert r.exit_code == 2 and "--weight-average" in r.output


def test_classification_usage_errors():
    assert invoke(classification.main, ["--quick", "--methods", "svm"]).exit_code == 2
    r = invoke(classification.main, ["--quick", "--labels", "15", "--no-progress"])
    assert r.exit_code == 2 and "multiple of 10" in r.output
    assert classification.budget_for(10, 2.0) == 2.0 and classification.budget_for(1000, 2.0) == 4.0
    assert classification.budget_for(60000, 2.0) == 8.0


def test_classification_few_label_settings():
    # SETTINGS apply at every label count, FEW_LABEL_SETTINGS replace them up to FEW_LABELS;
    # every method gets the same weight average, and 0 turns it off
    beta = classification.WEIGHT_AVERAGE
    assert classification.settings("cnn", 100) == {**classification.FEW_LABEL_SETTINGS["cnn"], "weight_average": beta}
    assert classification.settings("cnn", 1000) == {"weight_average": beta}
    assert classification.settings("zor", 60000) == {"target_activation": 0.5, "weight_average": beta}
    assert classification.settings("zor", weight_average=0.0) == {"target_activation": 0.5}
    assert classification.settings("zor", 100, 0.0) == {"target_activation": 0.5, "curriculum": False}
    assert classification.settings("cnn", 100, 0.0) == classification.FEW_LABEL_SETTINGS["cnn"]
    few, many = classification.build("zor", 0, 10), classification.build("zor", 0, 60000)
    assert few.curriculum is False and many.curriculum is True
    assert few.net.layers[1].target_activation == many.net.layers[1].target_activation == 0.5
    assert few.net.config.weight_average == beta
    assert classification.build("zor", 0, 10, 0.0).net.config.weight_average == 0.0
    assert classification.build("cnn", 0, 10).optimizer.param_groups[0]["lr"] == 3e-4
    assert classification.build("cnn", 0, 1000).optimizer.param_groups[0]["lr"] == 1e-3
    assert classification.build("mlp", 0, 1000).weight_average == beta


def test_classification_goals_by_hand():
    summary = [{"labels": 10, "method": "zor", "accuracy": 50.0}, {"labels": 10, "method": "mlp", "accuracy": 49.0},
               {"labels": 60000, "method": "zor", "accuracy": 84.0}, {"labels": 60000, "method": "cnn", "accuracy": 86.5}]
    g = classification.goals(summary)
    assert (g[0]["gap_points"], g[0]["met"]) == (1.0, True)
    assert (g[1]["gap_points"], g[1]["goal"], g[1]["met"]) == (-2.5, "within 2 points", False)


def test_classification_paired_by_hand():
    # seed by seed: zor − mlp = +2, −1, +0.5 → median +0.5, ahead on 2 of 3; a seed the backprop
    # method lacks is left out; a label count with no verdict gives no row
    rows = [{"labels": 10, "method": m, "seed": s, "accuracy": a}
            for m, s, a in [("zor", 0, 50.0), ("mlp", 0, 48.0), ("zor", 1, 47.0), ("mlp", 1, 48.0),
                            ("zor", 2, 49.5), ("mlp", 2, 49.0), ("zor", 3, 60.0)]]
    verdicts = [{"labels": 10, "best_zor": "zor", "best_backprop": "mlp"}]
    p = classification.paired(rows, verdicts)
    assert p == [{"labels": 10, "zor": "zor", "backprop": "mlp", "seeds": 3, "median_difference": 0.5,
                  "zor_ahead": 2}]
    assert classification.paired(rows, [{"labels": 100, "best_zor": "zor", "best_backprop": "mlp"}]) == []


def _fake_wheel(folder: Path, n: int = 2) -> None:
    from PIL import Image

    with zipfile.ZipFile(folder / "foolbox-0-py3-none-any.whl", "w") as z:
        for k in range(n):
            buf = io.BytesIO()
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
            z.writestr(f"foolbox/data/cifar10_{k:02d}_{k}.png", buf.getvalue())


def test_colorization_quick_with_cifar(tmp_path):
    _fake_wheel(tmp_path)
    out = tmp_path / "col.json"
    r = invoke(colorization.main, ["--quick", "--no-progress", "--cifar", str(tmp_path), "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    rows = {row["method"]: row for row in data["rows"]}
    assert set(rows) == {"zor", "mlp", "grey", "mean"}
    # predicting grey: no colour at all, so the ab error is the truth's own mean chroma
    assert rows["grey"]["held_out_chroma_ratio"] < 0.01 and rows["grey"]["steps"] == 0
    assert rows["zor"]["steps"] >= 1 and np.isfinite(rows["zor"]["cifar_psnr"])
    assert "2 CIFAR-10 test images" in r.output


def test_colorization_without_cifar_skips_those_rows(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOR_FOOLBOX", raising=False)
    out = tmp_path / "col.json"
    r = invoke(colorization.main, ["--quick", "--no-progress", "--methods", "grey,mean", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert "CIFAR-10 rows skipped" in data["config"]["cifar"]
    assert not any(k.startswith("cifar_") for k in data["rows"][0])
    assert invoke(colorization.main, ["--quick", "--methods", "gan"]).exit_code == 2


def test_denoising_quick(tmp_path):
    out = tmp_path / "d.json"
    r = invoke(denoising.main, ["--quick", "--no-progress", "--json", str(out)])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())["rows"]
    assert {(row["noise"], row["method"]) for row in rows} == \
        {(k, m) for k in ("gaussian", "salt_and_pepper") for m in ("zor", "mlp", "median3", "noisy")}
    for row in rows:
        if row["method"] == "noisy":
            assert row["gain_db"] == 0.0
        assert row["psnr"] == pytest.approx(row["noisy_psnr"] + row["gain_db"])


def test_median3_by_hand():
    img = np.zeros((3, 3))
    img[1, 1] = 1.0                                     # one salt pixel: the median removes it
    assert denoising.median3(img.reshape(1, 9), 3, 3).tolist() == [[0.0] * 9]
    ramp = np.arange(9.0).reshape(3, 3)
    # centre: median of 0..8 = 4; corner (0, 0) with edges replicated: [0,0,1,0,0,1,3,3,4] → 1
    out = denoising.median3(ramp.reshape(1, 9), 3, 3).reshape(3, 3)
    assert out[1, 1] == 4.0 and out[0, 0] == 1.0


def test_depth_quick(tmp_path):
    out = tmp_path / "dp.json"
    r = invoke(depth.main, ["--quick", "--no-progress", "--json", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    zor = [row for row in data["rows"] if row["method"] == "zor"]
    assert [row["depth"] for row in zor] == [2, 4]
    assert len(zor[1]["dw_per_connection"]) == 3 and zor[0]["hidden_spike_rate"] is None
    assert all(v > 0 for v in zor[1]["dw_per_connection"])
    assert sorted({row["method"] for row in data["rows"]}) == ["mlp", "zor", "zor-init1"]
    assert [s["method"] for s in data["summary"] if s["depth"] == 4] == ["zor", "zor-init1", "mlp"]
    wide = [row for row in data["rows"] if row["method"] == "zor-init1"]
    # the same seed and draw, only the scale differs: the output charges start twice as large
    assert [r["out_std0"] / z["out_std0"] for r, z in zip(wide, zor)][0] == pytest.approx(2.0, rel=1e-4)
    assert invoke(depth.main, ["--quick", "--depths", "1,4"]).exit_code == 2
    assert [len(depth.zor_at_depth(d, 8, 0).layers) for d in (2, 5)] == [2, 5]
    assert depth.zor_at_depth(3, 8, 0, init_scale=1.0).config.init_scale == 1.0


def test_backprop_classifiers_learn_a_separable_problem():
    rng = np.random.default_rng(0)
    x = rng.random((200, 16), dtype=np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    for m in (MLPClassifier((16, 8, 2), lr=1e-2, seed=0),
              CNNClassifier((1, 4, 4), channels=4, kernel_size=2, stride=1, n_classes=2, lr=1e-2, seed=0)):
        r = m.fit(x, y, steps=300)
        assert r.steps == 300 and np.mean(m.scores(x).argmax(1) == y) > 0.9
    reg = MLPRegressor((16, 8, 16), seed=0)
    reg.fit(x, x, steps=2)
    assert reg.predict(x[:3]).shape == (3, 16) and reg.predict(x[:3]).min() >= 0.0


def test_backprop_baselines_refuse_bad_input():
    m = MLPClassifier((4, 3, 2), seed=0)
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ShapeError, match=r"expected values in \[0, 2\)"):
        m.fit(x, np.array([0, 1, 2, 0, 1]), steps=1)
    with pytest.raises(ShapeError, match="expected 5 integer labels"):
        m.fit(x, np.array([0, 1]), steps=1)
    with pytest.raises(ConfigError, match="does not fit"):
        CNNClassifier((1, 3, 3), kernel_size=5)
    with pytest.raises(ConfigError, match="output must be 'sigmoid' or 'linear'"):
        MLPRegressor((4, 2, 4), output="tanh")
    with pytest.raises(ShapeError, match="expected 5 rows"):
        MLPRegressor((4, 2, 4)).fit(x, np.zeros((3, 4), np.float32), steps=1)
