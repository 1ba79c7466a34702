"""Checkpoints are checked in full before anything is built (issue 22).

Classes: a declared size the tensors do not have (a few-KB file declaring 4,000,000
units, or 10¹⁸); a tensor of any kind that is non-finite, of another dtype or shape,
or unexpected; a format version this engine does not know; a config or metadata
JSON that is malformed, of the wrong type or nested 100,000 deep. Each ends in a
CheckpointError (exit 2 in zor-export), never in an allocation or a traceback.
"""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from zor.export.cli import main as export_main
from zor.runtime.metadata import parse

from zor import Layer, Zor
from zor.common.errors import CheckpointError, FormatVersionError, ModelFileError
from zor.engine import checkpoint_file
from zor.engine.checkpoint import read_config

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A small trained stateful network's checkpoint, with optimizer state and carried charges."""
    net = Zor([Layer(6, decay=0.5), Layer(5, homeostasis_rate=0.01), Layer(4, activation_function="sigmoid")],
              seed=0, device="cpu")
    x = torch.rand(3, 6, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        net.train_batch(x, torch.rand(3, 4, generator=torch.Generator().manual_seed(1)))
    path = tmp_path_factory.mktemp("ckpt") / "good.zor"
    net.save(path)
    return path


def _parts(path):
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n])["__metadata__"], st_load(data)


def _write(path, meta, tensors):
    path.write_bytes(st_save(tensors, metadata=meta))
    return path


def _variant(good, tmp_path, tensors=None, **meta_update):
    meta, base = _parts(good)
    meta.update(meta_update)
    return _write(tmp_path / "v.zor", meta, base if tensors is None else tensors)


# --------------------------------------------------------------------------- declared size vs actual
@pytest.mark.parametrize("size", [4_000_000, 10**18])
def test_a_declared_size_the_tensors_do_not_have_is_refused_before_building(good, tmp_path, size, monkeypatch):
    meta, _ = _parts(good)
    config = json.loads(meta["config"])
    config["layers"][1]["size"] = size
    path = _variant(good, tmp_path, config=json.dumps(config))
    assert path.stat().st_size < 20_000

    def no_build(*args, **kwargs):
        raise AssertionError("the network was built before the sizes were checked")

    monkeypatch.setattr(Zor, "__init__", no_build)
    with pytest.raises(CheckpointError, match=rf"tensor 'weights.0': expected float32 \(6, {size}\), "
                                              r"got torch.float32 \(6, 5\)"):
        Zor.load(path, device="cpu")
    with pytest.raises(CheckpointError):
        checkpoint_file.read(path, device="cpu")


def test_a_layer_count_the_tensors_do_not_have_is_refused(good, tmp_path):
    meta, tensors = _parts(good)
    config = json.loads(meta["config"])
    config["layers"].insert(1, {"size": 5})
    with pytest.raises(CheckpointError, match=r"tensor 'weights.1': expected float32 \(5, 5\), got torch.float32 \(5, 4\)"):
        Zor.load(_variant(good, tmp_path, config=json.dumps(config)), device="cpu")


# --------------------------------------------------------------------------- every tensor
TENSORS = ["weights.0", "novelty.1", "threshold.1", "rate.2", "state.0", "optim.0.exp_avg", "optim.1.exp_avg_sq",
           "optim.0.step"]


@pytest.mark.parametrize("name", TENSORS)
@pytest.mark.parametrize("fault", ["nan", "inf", "int32", "float64", "shape"])
def test_every_tensor_is_checked_for_finite_values_dtype_and_shape(good, tmp_path, name, fault):
    _, tensors = _parts(good)
    assert name in tensors
    t = tensors[name].clone()
    if fault == "nan":
        t.view(-1)[0] = float("nan")
        match = rf"tensor '{name}' holds NaN/inf values \(1 NaN, 0 infinite\): expected finite numbers"
    elif fault == "inf":
        t.view(-1)[0] = float("inf")
        match = rf"tensor '{name}' holds NaN/inf values \(0 NaN, 1 infinite\)"
    elif fault in ("int32", "float64"):
        t = t.to(getattr(torch, fault))
        match = rf"tensor '{name}': expected float32 .*, got torch.{fault}"
    else:
        t = torch.zeros(tuple(t.shape) + (2,))
        match = rf"tensor '{name}': expected float32"
    tensors[name] = t
    with pytest.raises(CheckpointError, match=match):
        Zor.load(_variant(good, tmp_path, tensors), device="cpu")


def test_minus_inf_thresholds_stay_legal_and_a_good_file_loads(good, tmp_path):
    _, tensors = _parts(good)
    tensors["threshold.2"] = torch.full_like(tensors["threshold.2"], float("-inf"))
    back = Zor.load(_variant(good, tmp_path, tensors), device="cpu")
    assert torch.isinf(back.threshold(2)).all()
    with pytest.raises(CheckpointError, match="'rate.1' holds NaN/inf values \\(0 NaN, 1 infinite\\)"):
        tensors["rate.1"] = torch.tensor([float("-inf"), 0, 0, 0, 0])
        Zor.load(_variant(good, tmp_path, tensors), device="cpu")


def test_unexpected_and_negative_tensors_are_refused(good, tmp_path):
    _, tensors = _parts(good)
    with pytest.raises(CheckpointError, match="unexpected tensor 'extra'"):
        Zor.load(_variant(good, tmp_path, {**tensors, "extra": torch.zeros(1)}), device="cpu")
    with pytest.raises(CheckpointError, match="unexpected tensor 'state.9'"):
        Zor.load(_variant(good, tmp_path, {**tensors, "state.9": torch.zeros(1, 4)}), device="cpu")
    neg = dict(tensors, **{"optim.0.exp_avg_sq": -torch.ones_like(tensors["optim.0.exp_avg_sq"])})
    with pytest.raises(CheckpointError, match="'optim.0.exp_avg_sq' holds negative values"):
        Zor.load(_variant(good, tmp_path, neg), device="cpu")
    with pytest.raises(CheckpointError, match=r"optimizer_state names weight\(s\) \['7'\]"):
        Zor.load(_variant(good, tmp_path, optimizer_state=json.dumps({"7": []})), device="cpu")


def test_a_nan_optimizer_state_no_longer_poisons_training(good, tmp_path):
    _, tensors = _parts(good)
    tensors["optim.0.exp_avg"][0, 0] = float("nan")          # before: accepted, all weights NaN 3 steps later
    with pytest.raises(CheckpointError, match="optim.0.exp_avg"):
        Zor.load(_variant(good, tmp_path, tensors), device="cpu")


# --------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version, error, match", [
    ("-3", CheckpointError, "unknown checkpoint format version -3: expected 1..1"),
    ("0", CheckpointError, "unknown checkpoint format version 0"),
    ("x", CheckpointError, "bad format_version 'x': expected an integer"),
    ("2", FormatVersionError, "newer than this engine reads"),
])
def test_only_known_format_versions(good, tmp_path, version, error, match):
    with pytest.raises(error, match=match):
        Zor.load(_variant(good, tmp_path, format_version=version), device="cpu")


# --------------------------------------------------------------------------- config JSON
@pytest.mark.parametrize("config, match", [
    ("{", "config is not valid JSON"),
    (DEEP, "config is JSON nested too deeply to read"),
    ("[]", "expected a JSON object, got list"),
    (json.dumps({"layers": "abc", "network": {}}), "expected 'layers' to be a list of objects, got 'abc'"),
    (json.dumps({"layers": [1, 2], "network": {}}), "expected 'layers' to be a list of objects"),
    (json.dumps({"layers": [{"size": 6}, {"size": 4}], "network": "x"}), "expected 'network' to be an object"),
    (json.dumps({"layers": [{"size": 6}, {"size": 4}], "network": {}, "task": 3}), "expected 'task'"),
    (json.dumps({"layers": [{"size": 6}], "network": {}}), "at least 2 layers"),
    (json.dumps({"layers": [{"size": "6"}, {"size": 4}], "network": {}}), "Layer size must be an int"),
    (json.dumps({"layers": [{"size": 6, "shape": 5}, {"size": 4}], "network": {}}), "invalid config"),
    (json.dumps({"layers": [{"size": 6}, {"size": 4}], "network": {"nope": 1}}), "invalid config"),
])
def test_bad_config_json_is_a_checkpoint_error(good, tmp_path, config, match):
    path = _variant(good, tmp_path, config=config)
    with pytest.raises(CheckpointError, match=match):
        Zor.load(path, device="cpu")
    if "valid JSON" in match or "deeply" in match or "JSON object" in match or "'layers'" in match:
        with pytest.raises(CheckpointError, match=match):
            read_config(path)


@pytest.mark.parametrize("state", ["{", DEEP, "[]", json.dumps({"0": "abc"})])
def test_bad_optimizer_state_json_is_a_checkpoint_error(good, tmp_path, state):
    with pytest.raises(CheckpointError, match="optimizer_state"):
        Zor.load(_variant(good, tmp_path, optimizer_state=state), device="cpu")


def test_a_deeply_nested_safetensors_header_is_a_checkpoint_error(tmp_path):
    header = ('{"__metadata__": {"format": "zor-checkpoint"}, "x": ' + DEEP + "}").encode()
    path = tmp_path / "deep.zor"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(CheckpointError, match="nested too deeply"):
        Zor.load(path, device="cpu")


@pytest.mark.parametrize("config", ["{", DEEP, json.dumps({"layers": "abc", "network": {}})])
def test_zor_export_ends_bad_configs_with_exit_2(good, tmp_path, config):
    path = _variant(good, tmp_path, config=config)
    res = CliRunner().invoke(export_main, [str(path), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2, res.output
    assert "invalid config in checkpoint" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "m.onnx").exists()


# --------------------------------------------------------------------------- runtime metadata JSON
@pytest.mark.parametrize("key", ["zor.task", "zor.layers", "zor.state", "zor.quantization", "zor.calibration",
                                 "zor.verification", "zor.paths", "zor.weights"])
def test_deep_json_in_runtime_metadata_is_a_model_file_error(key):
    meta = {"zor.format": "zor-onnx", "zor.format_version": "1", "zor.layers": '[{"size": 4}, {"size": 2}]',
            key: DEEP}
    with pytest.raises(ModelFileError, match=f"metadata {key} is JSON nested too deeply to read"):
        parse(meta, "m.onnx")
