"""Checkpoints: bit-exact round trips, atomic writes, and every way a file can be bad."""

import json
import os

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zor import Layer, Zor
from zor.common.errors import CheckpointError, FormatVersionError, OutputPathError
from zor.engine.checkpoint import FORMAT_VERSION, read_config


def trained(stateful=False):
    layers = [Layer(12, decay=0.5 if stateful else 0.0), Layer(8, homeostasis_rate=0.01, novelty_factor=0.2, threshold_range=(0.0, None)),
              Layer(12, activation_function="sigmoid")]
    net = Zor(layers, seed=1, device="cpu", weight_average=0.9, task={"name": "reconstruct", "note": "test"})
    x = torch.rand(16, 12, generator=torch.Generator().manual_seed(0))
    for _ in range(5):
        net.train_batch(x, x)
    return net, x


@pytest.mark.parametrize("stateful", [False, True])
def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path, stateful):
    net, x = trained(stateful)
    path = tmp_path / "net.zor"
    net.save(path)
    back = Zor.load(path, device="cpu")
    assert back.sizes == net.sizes and back.task == net.task and back.config == net.config
    assert back.layers[1].threshold_range == (0.0, None)      # an open bound survives the JSON
    assert back.config.weight_average == 0.9
    for i in range(len(net.layers)):
        assert torch.equal(back.threshold(i), net.threshold(i))
        assert torch.equal(back.rate(i), net.rate(i))
    for i in range(len(net.weights)):
        assert torch.equal(back.weights[i], net.weights[i])
        assert torch.equal(back.novelty_trace(i), net.novelty_trace(i))
    if stateful:
        assert torch.equal(back.state[0], net.state[0])
    assert torch.equal(back.forward(x, train=False), net.forward(x, train=False))
    # optimizer moments came along: one more step gives the same weights
    net.train_batch(x, x)
    back.train_batch(x, x)
    for a, b in zip(net.weights, back.weights):
        assert torch.equal(a, b)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    net, _ = trained()
    path = tmp_path / "net.zor"
    net.save(path)
    net.save(path)   # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["net.zor"]
    with pytest.raises(OutputPathError, match="does not exist"):
        net.save(tmp_path / "missing" / "net.zor")
    assert sorted(os.listdir(tmp_path)) == ["net.zor"]


def test_read_config_without_building(tmp_path):
    net, _ = trained()
    net.save(tmp_path / "n.zor")
    cfg = read_config(tmp_path / "n.zor")
    assert cfg["format"] == "zor-checkpoint" and cfg["format_version"] == str(FORMAT_VERSION)
    assert [d["size"] for d in cfg["config"]["layers"]] == [12, 8, 12]


def _rewrite(path, tensors=None, meta_update=None, drop=None):
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len])["__metadata__"]
    tensors = tensors if tensors is not None else st_load(data)
    if drop:
        tensors = {k: v for k, v in tensors.items() if k != drop}
    meta.update(meta_update or {})
    path.write_bytes(st_save(tensors, metadata=meta))


def test_bad_checkpoints(tmp_path):
    net, _ = trained()
    good = tmp_path / "good.zor"
    net.save(good)

    with pytest.raises(CheckpointError, match="does not exist"):
        Zor.load(tmp_path / "nope.zor")
    with pytest.raises(CheckpointError, match="is a folder"):
        Zor.load(tmp_path)

    trunc = tmp_path / "trunc.zor"
    trunc.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        Zor.load(trunc)
    short = tmp_path / "short.zor"
    short.write_bytes(good.read_bytes()[:5])
    with pytest.raises(CheckpointError, match="truncated or empty"):
        Zor.load(short)

    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(st_save({"w": torch.zeros(2)}, metadata={"format": "pt"}))
    with pytest.raises(CheckpointError, match="expected format 'zor-checkpoint'.*got 'pt'"):
        Zor.load(foreign)
    pickle_like = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(2)}, pickle_like)
    with pytest.raises(CheckpointError, match="not a Zor checkpoint"):
        Zor.load(pickle_like)

    newer = tmp_path / "newer.zor"
    newer.write_bytes(good.read_bytes())
    _rewrite(newer, meta_update={"format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(FormatVersionError, match="newer than this engine reads"):
        Zor.load(newer)

    missing = tmp_path / "missing.zor"
    missing.write_bytes(good.read_bytes())
    _rewrite(missing, drop="threshold.1")
    with pytest.raises(CheckpointError, match=r"missing tensor 'threshold.1' \(expected shape \(8,\)\)"):
        Zor.load(missing)

    wrong = tmp_path / "wrong.zor"
    wrong.write_bytes(good.read_bytes())
    tensors = st_load(good.read_bytes())
    tensors["weights.0"] = torch.zeros(3, 3)
    _rewrite(wrong, tensors=tensors)
    with pytest.raises(CheckpointError, match=r"weights.0.*expected float32 \(12, 8\), got torch.float32 \(3, 3\)"):
        Zor.load(wrong)

    nan = tmp_path / "nan.zor"
    tensors = st_load(good.read_bytes())
    tensors["weights.1"][0, 0] = float("nan")
    nan.write_bytes(good.read_bytes())
    _rewrite(nan, tensors=tensors)
    with pytest.raises(CheckpointError, match="NaN"):
        Zor.load(nan)

    badcfg = tmp_path / "badcfg.zor"
    badcfg.write_bytes(good.read_bytes())
    _rewrite(badcfg, meta_update={"config": json.dumps({"layers": [{"size": 0}], "network": {}})})
    with pytest.raises(CheckpointError, match="invalid config"):
        Zor.load(badcfg)
