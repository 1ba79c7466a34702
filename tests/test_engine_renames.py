"""Renamed parameters (issue 20): activation_rate → homeostasis_rate, learning_range → max_update_norm.

The old names work for one release with a DeprecationWarning naming the new one; both
names at once is a ConfigError; checkpoints written with the old names still load, and
new ones are written with the new names.
"""

import json
import warnings

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zor import Conv, Layer, Zor
from zor.common.errors import CheckpointError, ConfigError
from zor.engine.checkpoint import read_config
from zor.tasks.translation import TranslationConfig

OLD_TO_NEW = {"activation_rate": "homeostasis_rate", "learning_range": "max_update_norm"}


def seed_layers(names):
    """The seed README's quick-start layers, under the given parameter names."""
    eta, clip = names
    return [Layer(784, target_activation=0.9, **{clip: 0.5, eta: 0.2}),
            Layer(128, target_activation=0.5, **{clip: 0.5, eta: 0.2}),
            Layer(784, target_activation=0.5, activation_function="sigmoid", **{clip: 0.5, eta: 0.2})]


def test_old_names_warn_and_train_identically():
    with pytest.warns(DeprecationWarning) as caught:
        old = Zor(seed_layers(("activation_rate", "learning_range")), device="cpu", seed=3)
    messages = {str(w.message) for w in caught}
    assert "Layer(activation_rate=...) is deprecated: use homeostasis_rate=" in messages
    assert "Layer(learning_range=...) is deprecated: use max_update_norm=" in messages
    assert all(w.filename == __file__ for w in caught)          # the warning points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)      # the new names never warn
        new = Zor(seed_layers(("homeostasis_rate", "max_update_norm")), device="cpu", seed=3)
    assert old.layers == new.layers
    x = torch.rand(16, 784, generator=torch.Generator().manual_seed(0))
    for _ in range(3):
        assert torch.equal(old.train_batch(x, x), new.train_batch(x, x))
    for i in range(len(old.layers)):
        assert torch.equal(old.threshold(i), new.threshold(i))
    for a, b in zip(old.weights, new.weights):
        assert torch.equal(a, b)


def test_old_attribute_names_read_and_write_the_new_ones():
    layer = Layer(4, homeostasis_rate=0.1, max_update_norm=0.5)
    with pytest.warns(DeprecationWarning, match="use Layer.homeostasis_rate"):
        assert layer.activation_rate == 0.1
    with pytest.warns(DeprecationWarning, match="use Layer.max_update_norm"):
        layer.learning_range = 0.25
    assert layer.max_update_norm == 0.25


def test_conv_takes_the_old_names_too():
    with pytest.warns(DeprecationWarning, match=r"Conv\(activation_rate=...\) is deprecated: use homeostasis_rate="):
        conv = Conv(4, kernel_size=3, activation_rate=0.01)
    assert conv.homeostasis_rate == 0.01
    with pytest.raises(ConfigError, match="both activation_rate= and homeostasis_rate="):
        Conv(4, activation_rate=0.01, homeostasis_rate=0.01)


@pytest.mark.parametrize("old, new", sorted(OLD_TO_NEW.items()))
def test_both_names_is_a_config_error(old, new):
    with pytest.raises(ConfigError, match=f"both {old}= and {new}="):
        Layer(4, **{old: 0.5, new: 0.5})
    with pytest.raises(ConfigError, match=f"both {old}= and {new}="):
        TranslationConfig(**{old: 0.5, new: 0.5})


def test_translation_config_takes_the_old_names():
    with pytest.warns(DeprecationWarning) as caught:
        cfg = TranslationConfig(learning_range=None, activation_rate=0.02)
    assert {str(w.message) for w in caught} == {
        "TranslationConfig(learning_range=...) is deprecated: use max_update_norm=",
        "TranslationConfig(activation_rate=...) is deprecated: use homeostasis_rate="}
    assert cfg == TranslationConfig(max_update_norm=None, homeostasis_rate=0.02)
    assert "learning_range" not in cfg.to_dict() and cfg.to_dict()["max_update_norm"] is None


def _rename_config_keys(path, renames):
    """Rewrite a checkpoint's JSON config with its layer keys renamed (old → new in ``renames``)."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len])["__metadata__"]
    config = json.loads(meta["config"])
    config["layers"] = [{renames.get(k, k): v for k, v in d.items()} for d in config["layers"]]
    meta["config"] = json.dumps(config)
    path.write_bytes(st_save(st_load(data), metadata=meta))


def test_a_checkpoint_with_the_old_names_loads(tmp_path):
    net = Zor([Layer(6), Layer(4, homeostasis_rate=0.05, max_update_norm=0.3), Layer(6)], device="cpu", seed=1)
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(0))
    net.train_batch(x, x)
    path = tmp_path / "old.zor"
    net.save(path)
    layer_keys = set(read_config(path)["config"]["layers"][1])
    assert {"homeostasis_rate", "max_update_norm"} <= layer_keys                  # written with the new names
    assert not {"activation_rate", "learning_range"} & layer_keys
    _rename_config_keys(path, {new: old for old, new in OLD_TO_NEW.items()})
    assert {"activation_rate", "learning_range"} <= set(read_config(path)["config"]["layers"][1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)      # loading an old file is not the user's doing
        back = Zor.load(path, device="cpu")
    assert back.layers == net.layers
    assert back.layers[1].homeostasis_rate == 0.05 and back.layers[1].max_update_norm == 0.3
    assert torch.equal(back.train_batch(x, x), net.train_batch(x, x))
    for a, b in zip(back.weights, net.weights):
        assert torch.equal(a, b)
    back.save(tmp_path / "new.zor")                              # saved again: the new names
    assert "max_update_norm" in read_config(tmp_path / "new.zor")["config"]["layers"][1]


def test_a_checkpoint_with_both_names_is_invalid(tmp_path):
    net = Zor([Layer(3), Layer(2)], device="cpu")
    path = tmp_path / "both.zor"
    net.save(path)
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len])["__metadata__"]
    config = json.loads(meta["config"])
    config["layers"][0]["learning_range"] = 0.5
    meta["config"] = json.dumps(config)
    path.write_bytes(st_save(st_load(data), metadata=meta))
    with pytest.raises(CheckpointError, match="both learning_range= and max_update_norm="):
        Zor.load(path, device="cpu")
