"""zor-export with click's CliRunner: export, verify, inspect, and every bad input of the issue."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from zor.export.cli import main
from zor.export.registry import REGISTRY

from zor import Layer, Zor


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def ckpt(tmp_path):
    net = Zor([Layer(12, decay=0.5), Layer(8, activation_function="relu"), Layer(12, activation_function="sigmoid")],
              seed=0, device="cpu", task={"name": "reconstruct", "input": {"range": [0, 1]}})
    net.fit(np.random.default_rng(0).random((20, 12), dtype=np.float32), steps=20, progress=False)
    net.save(tmp_path / "m.zor")
    return tmp_path / "m.zor"


def only(folder, *names):
    """The folder holds exactly these files (no partial or temp file was left)."""
    return sorted(p.name for p in folder.iterdir()) == sorted(names)


def test_export_verify_inspect_round_trip(ckpt, tmp_path):
    r = run(ckpt, "-o", tmp_path / "m.onnx", "--steps", 20)
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output and "verification: passed" in r.output
    r = run("verify", tmp_path / "m.onnx", "--checkpoint", ckpt, "--steps", 10)
    assert r.exit_code == 0, r.output
    assert "verification passed (float32)" in r.output and "layer 1: spike agreement 100.0000 %" in r.output
    r = run("inspect", tmp_path / "m.onnx")
    assert r.exit_code == 0, r.output
    for text in ("zor-onnx v1", "task: reconstruct", "stateful: yes, state state_in_0→state_out_0 (12, starts at 0.0)",
                 "θ min", "dense", "sizes: file", "verification: passed", "weights sha256"):
        assert text in r.output, text
    info = json.loads(run("inspect", tmp_path / "m.onnx", "--json").output)
    assert [row["size"] for row in info["layers"]] == [12, 8, 12] and info["stateful"] is True


def test_explicit_export_subcommand_and_int8_with_calibration(ckpt, tmp_path):
    np.save(tmp_path / "cal.npy", np.random.default_rng(1).random((40, 12), dtype=np.float32))
    r = run("export", ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration", tmp_path / "cal.npy",
            "--device", "rpi4", "--steps", 5)
    assert r.exit_code == 0, r.output
    assert "int8 (profile rpi4: QDQ act s8 / weight s8" in r.output and "layer 1: spike agreement" in r.output
    r = run("verify", tmp_path / "q.onnx", "--checkpoint", ckpt, "--data", tmp_path / "cal.npy")
    assert r.exit_code == 0, r.output
    assert "verification passed (int8)" in r.output and "task metric (seed_accuracy vs input)" in r.output


def test_verify_with_another_checkpoint_fails_with_exit_1(ckpt, tmp_path):
    assert run(ckpt, "-o", tmp_path / "m.onnx", "--no-verify").exit_code == 0
    other = Zor([Layer(12, decay=0.5), Layer(8, activation_function="relu"), Layer(12, activation_function="sigmoid")],
                seed=5, device="cpu")
    other.save(tmp_path / "other.zor")
    r = run("verify", tmp_path / "m.onnx", "--checkpoint", tmp_path / "other.zor")
    assert r.exit_code == 1 and "exported from other weights" in r.output


def test_failed_verification_exits_1_and_writes_nothing(ckpt, tmp_path, monkeypatch):
    from zor.export import converters

    def broken(ctx):                                  # a converter bug: θ shifted by 0.25
        ctx.threshold = ctx.threshold + np.float32(0.25)
        return converters.convert_dense(ctx)

    monkeypatch.setitem(REGISTRY, "dense", broken)
    r = run(ckpt, "-o", tmp_path / "m.onnx", "--steps", 5)
    assert r.exit_code == 1 and "verification failed" in r.output and "spike mismatches" in r.output
    assert only(tmp_path, "m.zor")
    assert run(ckpt, "-o", tmp_path / "m.onnx", "--steps", 5, "--no-verify").exit_code == 0   # the escape hatch


def test_int8_refusal_exits_1_and_writes_nothing(tmp_path):
    """W = I reconstructs its input exactly (metric 100); calibration rows 100× too small clip the
    quantized activations at 1 % of their range, so the int8 metric drops by tens of points."""
    net = Zor([Layer(12), Layer(12)], seed=0, device="cpu", task={"name": "reconstruct"})
    with torch.no_grad():
        net.weights[0].copy_(torch.eye(12))
    net.save(tmp_path / "ident.zor")
    x = np.random.default_rng(2).random((60, 12), dtype=np.float32)
    x[0::2] *= 0.01
    np.save(tmp_path / "bad.npy", x)
    r = run(tmp_path / "ident.zor", "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration",
            tmp_path / "bad.npy", "--max-drop", "0.1", "--spike-budget", "0")
    assert r.exit_code == 1, r.output
    assert "int8 export refused" in r.output and "more than --max-drop 0.1" in r.output
    assert only(tmp_path, "ident.zor", "bad.npy")


@pytest.mark.parametrize("case, expect", [
    ("missing", "checkpoint .*nope.zor does not exist"),
    ("truncated", "truncated|not a Zor checkpoint"),
    ("foreign", "not a Zor checkpoint|expected format 'zor-checkpoint'"),
    ("nan", "holds NaN/inf values"),
])
def test_bad_checkpoints_exit_2_with_a_clear_message(ckpt, tmp_path, case, expect):
    import re

    if case == "missing":
        path = tmp_path / "nope.zor"
    elif case == "truncated":
        path = tmp_path / "cut.zor"
        data = ckpt.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "foreign":
        path = tmp_path / "foreign.zor"
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3, np.float32)}, str(path), metadata={"format": "pt"})
    else:
        net = Zor.load(ckpt, device="cpu")
        with torch.no_grad():
            net.weights[0][0, 0] = float("nan")
        path = tmp_path / "nan.zor"
        net.save(path)
    r = run(path, "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2, r.output
    assert re.search(expect, r.output), r.output
    assert not (tmp_path / "m.onnx").exists()


def test_device_auto_uses_the_detected_profiles_recipe(ckpt, tmp_path):
    from zor.devices import detect, names

    np.save(tmp_path / "cal.npy", np.random.default_rng(1).random((40, 12), dtype=np.float32))
    r = run(ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration", tmp_path / "cal.npy",
            "--device", "auto", "--steps", 3)
    assert r.exit_code == 0, r.output
    info = json.loads(run("inspect", tmp_path / "q.onnx", "--json").output)
    assert info["quantization"]["profile"] == detect().profile.name and info["quantization"]["profile"] in names()


def test_unknown_device_profile_exits_2_listing_the_profiles(ckpt, tmp_path):
    r = run(ckpt, "-o", tmp_path / "m.onnx", "--device", "toaster")
    assert r.exit_code == 2 and "unknown device profile 'toaster'" in r.output and "rpi4" in r.output
    assert only(tmp_path, "m.zor")


def test_calibration_of_the_wrong_width_exits_2(ckpt, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((10, 784), np.float32))
    r = run(ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration", tmp_path / "wide.npy")
    assert r.exit_code == 2 and "expected shape (N, 12)" in r.output and "got (10, 784)" in r.output
    assert only(tmp_path, "m.zor", "wide.npy")


def test_calibration_missing_or_not_npy_exits_2(ckpt, tmp_path):
    r = run(ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration", tmp_path / "none.npy")
    assert r.exit_code == 2 and "does not exist" in r.output
    (tmp_path / "cal.csv").write_text("1,2,3\n")
    r = run(ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8", "--calibration", tmp_path / "cal.csv")
    assert r.exit_code == 2 and "expected a .npy file" in r.output


def test_int8_without_calibration_for_a_non_image_model_exits_2(ckpt, tmp_path):
    r = run(ckpt, "-o", tmp_path / "q.onnx", "--quantize", "int8")
    assert r.exit_code == 2 and "needs calibration data" in r.output


def test_missing_output_folders_are_created_and_removed_again_when_the_export_fails(ckpt, tmp_path):
    r = run(ckpt, "-o", tmp_path / "no" / "such" / "m.onnx", "--no-verify")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "no" / "such" / "m.onnx").is_file()
    r = run(ckpt, "-o", tmp_path / "new" / "sub" / "q.onnx", "--quantize", "int8")     # no calibration data: exit 2
    assert r.exit_code == 2 and "calibration" in r.output
    assert only(tmp_path, "m.zor", "no")                                                 # new/sub/ removed again


def test_usage_errors_exit_2(ckpt, tmp_path):
    assert run(ckpt).exit_code == 2                                              # no -o
    r = run(ckpt, "-o", tmp_path / "m.onnx", "--quantize", "int4")
    assert r.exit_code == 2 and "int4" in r.output
    assert run(ckpt, "-o", tmp_path / "m.onnx", "--max-drop", "-1").exit_code == 2
    assert run("verify", tmp_path / "m.onnx").exit_code == 2                     # no --checkpoint
    assert only(tmp_path, "m.zor")


@pytest.mark.parametrize("content", [b"", b"not onnx at all", None])
def test_inspect_and_verify_reject_files_that_are_not_zor_exports(ckpt, tmp_path, content):
    path = tmp_path / "x.onnx"
    if content is None:                                       # valid ONNX, but not from zor-export
        import onnx
        from onnx import TensorProto, helper

        g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(g), str(path))
    else:
        path.write_bytes(content)
    for args in (("inspect", path), ("verify", path, "--checkpoint", ckpt)):
        r = run(*args)
        assert r.exit_code == 2, r.output
        assert "not a readable ONNX file" in r.output or "expected a Zor export" in r.output


def test_help_documents_the_commands():
    r = run("--help")
    assert r.exit_code == 0 and "verify" in r.output and "inspect" in r.output
    r = run("export", "--help")
    for opt in ("--device", "--quantize", "--calibration", "--max-drop", "--no-verify", "--spike-budget"):
        assert opt in r.output
