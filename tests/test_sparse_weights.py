"""Bad external weights: missing, short, long, foreign, changed under the model: an error, never a wrong answer."""

import json
import os
import shutil
import time

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zor.export import export, load_model_file
from zor.export.cli import main as export_cli
from zor.runtime import Model
from zor.runtime.weightfile import WeightFile

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ModelFileError, WeightFileError


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ext")
    net = Zor([Layer(40, threshold=0.6), Layer(24, threshold=0.2, activation_function="sigmoid"), Layer(5)],
              seed=0, device="cpu")
    net.save(folder / "m.zor")
    res = export(net, folder / "m.onnx", path="sparse", max_batch=2, external_weights=True)
    x = np.random.default_rng(0).random((2, 40), dtype=np.float32)
    ref = Model(folder / "m.onnx", device="generic", weights="load")(x)
    return folder, res.weights, x, ref


def _copy(exported, tmp_path, name="c"):
    """A copy of the pair in its own folder; the .onnx may be renamed, the weights file keeps the name the
    metadata gives (m.weights)."""
    folder = exported[0]
    dest = tmp_path / name
    dest.mkdir(exist_ok=True)
    shutil.copy(folder / "m.onnx", dest / "c.onnx")
    shutil.copy(folder / "m.weights", dest / "m.weights")
    return dest / "c.onnx", dest / "m.weights"


@pytest.mark.parametrize("mode", ["load", "rows"])
def test_missing_weights_file(exported, tmp_path, mode):
    onnx_path, w = _copy(exported, tmp_path)
    w.unlink()
    with pytest.raises(WeightFileError, match="c.onnx: its weights file m.weights is missing"):
        Model(onnx_path, device="generic", weights=mode)


@pytest.mark.parametrize("mode", ["load", "rows"])
@pytest.mark.parametrize("delta, word", [(-1, "shorter"), (-4096, "shorter"), (7, "longer")])
def test_weights_file_of_another_size(exported, tmp_path, mode, delta, word):
    onnx_path, w = _copy(exported, tmp_path)
    data = w.read_bytes()
    w.write_bytes(data[:delta] if delta < 0 else data + b"\0" * delta)
    with pytest.raises(WeightFileError, match=f"holds {len(data) + delta:,} bytes, expected {len(data):,}.*{word}"):
        Model(onnx_path, device="generic", weights=mode)


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))


def test_foreign_content_of_the_right_size_is_refused(exported, tmp_path):
    _, spec, x, _ = exported
    onnx_path, w = _copy(exported, tmp_path)
    w0 = {t["name"]: t for t in spec["tensors"]}[fmt.weight(0)]
    _flip(w, w0["offset"] + 3 * 24 * 4 + 1)                 # inside row 3 of W_0
    with pytest.raises(WeightFileError, match="weight_0 .* does not match its SHA-256"):
        Model(onnx_path, device="generic", weights="load")
    rows = Model(onnx_path, device="generic", weights="rows")   # rows are checked when first read
    x3 = np.zeros((1, 40), np.float32)
    x3[0, 3] = 1.0                                          # unit 3 spikes: row 3 is read
    with pytest.raises(WeightFileError, match="row 3 of weight_0 .* does not match its CRC-32"):
        rows.run(x3)
    x5 = np.zeros((1, 40), np.float32)
    x5[0, 5] = 1.0                                          # row 5 is intact: answered
    assert rows.run(x5)["output"].shape == (1, 5)


@pytest.mark.parametrize("mode", ["load", "rows"])
@pytest.mark.parametrize("change", ["rewrite", "truncate", "replace", "remove"])
def test_file_changed_under_the_model(exported, tmp_path, mode, change):
    _, _, x, ref = exported
    onnx_path, w = _copy(exported, tmp_path)
    m = Model(onnx_path, device="generic", weights=mode)
    np.testing.assert_allclose(m(x), ref, atol=1e-5)
    time.sleep(0.01)
    if change == "rewrite":
        _flip(w, 10)
    elif change == "truncate":
        with open(w, "r+b") as f:
            f.truncate(100)
    elif change == "replace":
        shutil.copy(w, w.parent / "other")
        os.replace(w.parent / "other", w)
    else:
        w.unlink()
    with pytest.raises(WeightFileError, match="(changed|removed) under the model"):
        m.run(x)


def test_mmap_backend_sees_changes_too(exported, tmp_path):
    _, _, x, ref = exported
    onnx_path, w = _copy(exported, tmp_path)
    m = Model(onnx_path, device="generic", weights="rows", weights_backend="mmap")
    np.testing.assert_allclose(m(x), ref, atol=1e-5)
    time.sleep(0.01)
    _flip(w, 10)
    with pytest.raises(WeightFileError, match="changed under the model"):
        m.run(x)


def _with_weights_meta(exported, tmp_path, edit):
    onnx_path, _ = _copy(exported, tmp_path)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    for p in proto.metadata_props:
        if p.key == fmt.KEYS.WEIGHTS:
            spec = json.loads(p.value)
            edit(spec)
            p.value = json.dumps(spec)
    onnx.save(proto, str(onnx_path))
    return onnx_path


def test_weights_metadata_that_escapes_the_folder_or_the_file(exported, tmp_path):
    bad = _with_weights_meta(exported, tmp_path, lambda s: s.update(location="../m.weights"))
    with pytest.raises(ModelFileError, match="expected a plain file name"):
        Model(bad, device="generic", weights="rows")

    def past_end(s):
        s["tensors"][0]["offset"] = s["bytes"]
    bad = _with_weights_meta(exported, tmp_path, past_end)
    with pytest.raises(ModelFileError, match="does not fit the file"):
        Model(bad, device="generic", weights="rows")

    def wrong_shape(s):
        s["tensors"][1]["shape"] = [1, 2, 3]
    bad = _with_weights_meta(exported, tmp_path, wrong_shape)
    with pytest.raises(ModelFileError, match="needs 24 bytes"):
        Model(bad, device="generic", weights="rows")
    bad = _with_weights_meta(exported, tmp_path, lambda s: s.pop("bytes"))
    with pytest.raises(ModelFileError, match="zor.weights"):
        Model(bad, device="generic", weights="rows")


def test_exporter_side_readers_check_the_weights_file(exported, tmp_path):
    folder = exported[0]
    onnx_path, w = _copy(exported, tmp_path)
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(WeightFileError, match="holds .* bytes, expected"):
        load_model_file(onnx_path)
    assert load_model_file(onnx_path, load_external=False).graph.node       # the graph alone reads fine
    r = CliRunner().invoke(export_cli, ["verify", str(onnx_path), "--checkpoint", str(folder / "m.zor")])
    assert r.exit_code == 2 and "holds" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(export_cli, ["verify", str(folder / "m.onnx"), "--checkpoint", str(folder / "m.zor")])
    assert r.exit_code == 0, r.output


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=0), mode=st.sampled_from(["load", "rows"]))
def test_any_corrupted_byte_is_an_error_or_harmless(exported, tmp_path, offset, mode):
    # a flipped byte anywhere in the weights file: either refused, or it lies in padding / an unread row and
    # the answer is still the reference one; never a different answer
    _, spec, x, ref = exported
    onnx_path, w = _copy(exported, tmp_path, name=f"h{offset}-{mode}")
    _flip(w, offset % spec["bytes"])
    try:
        m = Model(onnx_path, device="generic", weights=mode)
        out = m(x)
    except WeightFileError:
        return
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_weightfile_reads_rows_in_runs(exported):
    folder, spec, _, _ = exported
    wf = WeightFile(folder / "m.onnx", spec)
    full = wf.tensor(fmt.weight(0))
    idx = np.array([0, 1, 2, 7, 9, 10, 39])
    np.testing.assert_array_equal(wf.rows(fmt.weight(0), idx), full[idx])
    assert wf.rows(fmt.weight(0), np.array([], np.int64)).shape == (0, 24)
    with pytest.raises(ModelFileError, match="expected 0..39"):
        wf.rows(fmt.weight(0), np.array([40]))
    with pytest.raises(ModelFileError, match="no tensor 'weight_9'"):
        wf.tensor("weight_9")
    wf.close()
