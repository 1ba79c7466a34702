"""No traceback from the CLIs: inspect on partial or malformed metadata, classifiers whose labels do not fit,
errors that name the input once and say what to do, and break-even figures that are named."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_runtime_support import build_model
from zor.export import export
from zor.export.cli import main as export_main
from zor.export.inspect import format_inspection, inspect_file
from zor.runtime import Model, tasks
from zor.runtime.cli import run_main
from zor.runtime.png import write_png

from zor import Layer, Zor
from zor.common import format as fmt
from zor.common.errors import ZorError

INF = float("inf")
JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
KEYS = [v for k, v in vars(fmt.KEYS).items() if k.isupper()]
# values shaped like the real ones, with their inner parts fuzzed, so the fuzz reaches the row and field code
SHAPED = {
    fmt.KEYS.LAYERS: st.lists(st.dictionaries(st.sampled_from(["index", "kind", "size", "activation", "decay",
                                                               "threshold", "refractory"]), JSON), max_size=3),
    fmt.KEYS.STATE: st.lists(st.dictionaries(st.sampled_from(["input", "output", "size", "initial"]), JSON), max_size=3),
    fmt.KEYS.TASK: st.dictionaries(st.sampled_from(["name", "input", "output", "labels"]), JSON),
    fmt.KEYS.QUANTIZATION: st.dictionaries(st.sampled_from(["mode", "recipe", "metric", "layers", "fallback"]),
                                           JSON | st.just("int8") | st.just("fp16")),
    fmt.KEYS.VERIFICATION: st.dictionaries(st.sampled_from(["passed", "skipped", "float32", "sparse", "int8"]),
                                           JSON | st.fixed_dictionaries({"outputs": JSON, "layers": JSON})),
    fmt.KEYS.PATHS: st.dictionaries(st.sampled_from(["requested", "connections", "break_even", "profile"]),
                                    JSON | st.just("auto") | st.lists(JSON, max_size=3)),
    fmt.KEYS.CALIBRATION: st.dictionaries(st.sampled_from(["layers", "source"]), JSON | st.lists(JSON, max_size=3)),
    fmt.KEYS.WEIGHTS: st.dictionaries(st.sampled_from(["location", "bytes", "tensors"]), JSON),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("insp")
    path = d / "m.onnx"
    export(Zor([Layer(4, decay=0.5), Layer(3), Layer(2)], seed=0), path, steps=3, path="auto")
    proto = onnx.load(str(path))
    return d, proto, {p.key: p.value for p in proto.metadata_props}


def _with_metadata(proto, meta, path):
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    del m.metadata_props[:]
    for key, value in meta.items():
        kv = m.metadata_props.add()
        kv.key, kv.value = key, value
    onnx.save(m, str(path))
    return path


def _inspect_answers(path):
    """inspect gives a printout (text and JSON) or a ZorError; anything else fails the test."""
    try:
        info = inspect_file(path)
    except ZorError:
        return None
    text = format_inspection(info)
    json.dumps(info)
    return text


@pytest.mark.parametrize("key", KEYS)
def test_inspect_answers_with_each_metadata_key_missing(exported, key):
    d, proto, meta = exported
    path = _with_metadata(proto, {k: v for k, v in meta.items() if k != key}, d / f"missing-{key}.onnx")
    text = _inspect_answers(path)
    if key in (fmt.KEYS.FORMAT, fmt.KEYS.FORMAT_VERSION):
        assert text is None                                   # not a Zor export: refused with a ZorError
    else:
        assert "layer" in text
    r = CliRunner().invoke(export_main, ["inspect", str(path)])
    assert r.exit_code in (0, 2) and "Traceback" not in r.output and not isinstance(r.exception, (TypeError, KeyError))


def test_inspect_answers_on_minimal_metadata(exported):
    d, proto, _ = exported
    path = _with_metadata(proto, {fmt.KEYS.FORMAT: fmt.FORMAT, fmt.KEYS.FORMAT_VERSION: "1"}, d / "minimal.onnx")
    text = _inspect_answers(path)
    assert "task: None" in text and "paths: dense (no zor.paths)" in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), data=st.data())
def test_inspect_never_fails_on_any_json_value_of_any_key(exported, key, data):
    d, proto, meta = exported
    strategy = JSON | SHAPED[key] if key in SHAPED else JSON
    value = data.draw(strategy)
    raw = data.draw(st.sampled_from([json.dumps(value), "{", "[1,", str(value)[:10]]))
    path = _with_metadata(proto, {**meta, key: raw}, d / "fuzz.onnx")
    _inspect_answers(path)


def test_malformed_values_are_named_as_problems(exported):
    d, proto, meta = exported
    bad = {**meta, fmt.KEYS.TASK: "[1, 2]", fmt.KEYS.LAYERS: '[null, {"index": [0], "size": "x"}]',
           fmt.KEYS.STATE: '[{"input": 1}]'}
    text = _inspect_answers(_with_metadata(proto, bad, d / "bad.onnx"))
    assert "metadata problems" in text and "zor.task: expected a JSON object, got list" in text
    assert "zor.layers: layer rows [0] are not JSON objects" in text


def test_deeply_nested_metadata_is_a_zor_error(exported):
    d, proto, meta = exported
    path = _with_metadata(proto, {**meta, fmt.KEYS.TASK: "[" * 100_000 + "]" * 100_000}, d / "deep.onnx")
    r = CliRunner().invoke(export_main, ["inspect", str(path)])
    assert r.exit_code in (0, 2) and "Traceback" not in r.output, r.output


# --------------------------------------------------------------------------- zor-run

@pytest.fixture()
def files(tmp_path):
    eye = np.eye(3)[:, :2]
    for name, labels in (("short", ["cat"]), ("text", "cat,dog")):
        build_model(tmp_path / f"{name}.onnx", [{"size": 3}, {"size": 2}], [eye], [np.zeros(3), np.full(2, -INF)],
                    task={"name": "classify", "labels": labels})
    build_model(tmp_path / "img.onnx", [{"size": 4}, {"size": 4}], [np.eye(4)], [np.zeros(4), np.full(4, -INF)],
                task={"name": "reconstruct", "input": {"shape": [4], "image": {"height": 2, "width": 2}}})
    np.save(tmp_path / "x.npy", np.array([[0.1, 0.9, 0.0]], np.float32))
    write_png(tmp_path / "wrongsize.png", np.zeros((3, 5), np.uint8))
    (tmp_path / "texts.txt").write_text("hola\n")
    return tmp_path


@pytest.mark.parametrize("model, text", [("short", "1 labels for 2 output units"),
                                         ("text", "labels of type str for 2 output units")])
def test_a_classifier_with_labels_that_do_not_fit_is_a_usage_error(files, model, text):
    r = CliRunner().invoke(run_main, [str(files / f"{model}.onnx"), str(files / "x.npy"), "-o", str(files / "o"),
                                      "--device", "generic"])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert text in r.output or "label" in r.output
    assert not (files / "o").exists()


def test_an_error_names_its_input_once(files):
    r = CliRunner().invoke(run_main, [str(files / "img.onnx"), str(files / "wrongsize.png"), "-o", str(files / "o"),
                                      "--device", "generic"])
    assert r.exit_code == 2, r.output
    assert r.output.count("wrongsize.png") == 1 and "expected a 2x2 image" in r.output


def test_a_text_input_without_a_task_says_use_task_translate(files):
    r = CliRunner().invoke(run_main, [str(files / "img.onnx"), str(files / "texts.txt"), "-o", str(files / "o")])
    assert r.exit_code == 2 and "use --task translate" in r.output, r.output


def test_label_is_a_str_for_one_image_and_a_list_for_a_batch(tmp_path):
    path = build_model(tmp_path / "c.onnx", [{"size": 4}, {"size": 2}], [np.eye(4)[:, :2]],
                       [np.full(4, -INF), np.full(2, -INF)],
                       task={"name": "classify", "labels": ["left", "right"],
                             "input": {"shape": [4], "image": {"height": 2, "width": 2}}})
    m = Model(path, device="generic")
    one = np.array([[0, 255], [0, 0]], np.uint8)                        # pixel 1 brightest: "right"
    assert tasks.classify(m, one).label == "right"
    assert tasks.classify(m, one[None]).label == ["right"]               # a stack of one is a batch
    assert tasks.classify(m, [one, one[::-1, ::-1]]).label == ["right", "left"]
    assert tasks.classify(m, np.zeros((5, 7), np.uint8) + one.repeat(3, 0).repeat(4, 1)[:5, :7]).label == "right"
    assert tasks.classify(m, np.array([[0.0, 1.0, 0.0, 0.0]], np.float32)).label == ["right"]   # rows: a batch


# --------------------------------------------------------------------------- break-even figures

def test_path_auto_names_the_profile_and_the_per_connection_break_even(tmp_path):
    net = Zor([Layer(6), Layer(4), Layer(3)], seed=0, device="cpu")
    net.save(tmp_path / "ck.zor")
    r = CliRunner().invoke(export_main, [str(tmp_path / "ck.zor"), "-o", str(tmp_path / "m.onnx"), "--path", "auto",
                                         "--no-verify"])
    assert r.exit_code == 0, r.output
    assert "break-even" in r.output and "for large connections" in r.output
    lines = [line for line in r.output.splitlines() if line.strip().startswith("connection ")]
    assert lines and all("synapses) " in line and "break-even" in line for line in lines)
