"""One output-path rule for zor-export, zor-run and zor-bench: checked before any work, no output an input,
only suffixes the run writes, unwritable folders refused with exit 2, missing folders made and removed on failure."""

import os

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import build_model
from zor.export.cli import main as export_main
from zor.export.source import check_output
from zor.runtime.cli import bench_main, run_main

from zor import Layer, Zor
from zor.common import fileio
from zor.common.errors import OutputPathError

INF = float("inf")


def invoke(cmd, *args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def refused(r, text):
    """Exit 2 with ``text`` in the message and no traceback."""
    return r.exit_code == 2 and text in r.output and "Traceback" not in r.output and r.exception is not None \
        and isinstance(r.exception, SystemExit)


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    net = Zor([Layer(6), Layer(4, activation_function="relu"), Layer(6, activation_function="sigmoid")],
              seed=0, device="cpu")
    net.save(d / "ck.zor")
    np.save(d / "cal.npy", np.random.default_rng(0).random((16, 6), dtype=np.float32))
    return d / "ck.zor"


@pytest.fixture()
def work(tmp_path):
    """A model, two .npy inputs, and a plain file, in a fresh folder."""
    rng = np.random.default_rng(0)
    build_model(tmp_path / "m.onnx", [{"size": 4}, {"size": 3, "activation": "relu"}, {"size": 4}],
                [rng.normal(size=(4, 3)), rng.normal(size=(3, 4))], [np.zeros(4), np.zeros(3), np.full(4, -INF)])
    np.save(tmp_path / "x1.npy", rng.random((2, 4), dtype=np.float32))
    np.save(tmp_path / "x2.npy", rng.random((2, 4), dtype=np.float32))
    (tmp_path / "afile").write_text("a file, not a folder")
    return tmp_path


# --------------------------------------------------------------------------- same file as an input

@pytest.mark.parametrize("alias", ["itself", "symlink", "hardlink"])
def test_zor_export_refuses_to_write_over_its_checkpoint(ckpt, tmp_path, alias):
    before = ckpt.read_bytes()
    out = {"itself": ckpt, "symlink": tmp_path / "link.onnx", "hardlink": tmp_path / "hard.onnx"}[alias]
    if alias == "symlink":
        out.symlink_to(ckpt)
    elif alias == "hardlink":
        os.link(ckpt, out)
    r = invoke(export_main, ckpt, "-o", out, "--no-verify")
    assert refused(r, "same file as the input"), r.output
    assert ckpt.read_bytes() == before


def test_zor_export_refuses_to_write_over_its_calibration_data(ckpt):
    cal = ckpt.parent / "cal.npy"
    before = cal.read_bytes()
    r = invoke(export_main, ckpt, "-o", cal, "--quantize", "int8", "--calibration", cal)
    assert refused(r, "same file as the input"), r.output
    assert cal.read_bytes() == before


def test_export_source_check_output_takes_the_inputs(ckpt, tmp_path):
    with pytest.raises(OutputPathError, match="same file as the input"):
        check_output(ckpt, [ckpt])
    with pytest.raises(OutputPathError, match="it is a folder"):
        check_output(tmp_path, [ckpt])
    check_output(tmp_path / "m.onnx", [ckpt, None])


@pytest.mark.parametrize("how", ["itself", "symlink", "into the inputs' folder", "the model"])
def test_zor_run_refuses_to_write_over_an_input(work, how):
    before = (work / "x1.npy").read_bytes()
    args = [work / "m.onnx", work / "x1.npy", "-o"]
    if how == "itself":
        args.append(work / "x1.npy")
    elif how == "symlink":
        (work / "sub").mkdir()
        (work / "sub" / "y.npy").symlink_to(work / "x1.npy")
        args.append(work / "sub" / "y.npy")
    elif how == "into the inputs' folder":                        # OUT folder/x1.npy is the input
        args.append(work)
    else:
        args = [work / "m.onnx", work / "x1.npy", "-o", work / "m.onnx"]
    r = invoke(run_main, *args, "--device", "generic")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert "same file as the input" in r.output or "does not write .onnx" in r.output
    assert (work / "x1.npy").read_bytes() == before


# --------------------------------------------------------------------------- suffixes the run can write

@pytest.mark.parametrize("out, text", [
    ("out.txt", ".txt output is for --task translate; this run writes .npy"),
    ("out.json", ".json output is for classification"),
    ("out.png", ".png output needs an image model run on a PNG input"),
    ("out.csv", "zor-run does not write .csv files; this run writes .npy"),
])
def test_zor_run_refuses_an_output_suffix_it_cannot_write(work, out, text):
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / out, "--device", "generic")
    assert refused(r, text), r.output
    assert "->" not in r.output and not (work / out).exists()


def test_zor_run_with_several_inputs_needs_a_folder(work):
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", work / "x2.npy", "-o", work / "y.npy")
    assert refused(r, "2 inputs write one output each: expected OUT to be a folder"), r.output
    assert not (work / "y.npy").exists()


# --------------------------------------------------------------------------- unwritable outputs

def test_outputs_under_a_file_are_refused_before_any_work(ckpt, work, monkeypatch):
    r = invoke(export_main, ckpt, "-o", work / "afile" / "m.onnx")
    assert refused(r, "is a file, not a folder"), r.output
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "afile" / "out.npy")
    assert refused(r, "is a file, not a folder"), r.output
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", work / "x2.npy", "-o", work / "afile" / "sub")
    assert refused(r, "is a file, not a folder"), r.output
    import zor.runtime.cli as rcli

    def no_benchmark(*a, **k):
        raise AssertionError("the benchmark ran before --json was checked")

    monkeypatch.setattr(rcli, "run_bench", no_benchmark)
    r = invoke(bench_main, work / "m.onnx", "--json", work / "afile" / "b.json", "--no-rss")
    assert refused(r, "is a file, not a folder"), r.output
    r = invoke(bench_main, work / "m.onnx", "--json", work / "m.onnx", "--no-rss")
    assert refused(r, "same file as the input"), r.output


def test_unwritable_folders_are_refused_up_front(ckpt, work, monkeypatch):
    # root ignores chmod: os.access is what the up-front check asks, so make it say no
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: not mode & os.W_OK)     # readable, not writable
    r = invoke(export_main, ckpt, "-o", work / "m2.onnx")
    assert refused(r, "is not writable"), r.output
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "out")
    assert refused(r, "is not writable"), r.output
    r = invoke(bench_main, work / "m.onnx", "--json", work / "b.json", "--no-rss")
    assert refused(r, "is not writable"), r.output
    assert listing(work) == ["afile", "m.onnx", "x1.npy", "x2.npy"]


def test_a_permission_error_at_write_time_is_an_output_path_error(ckpt, work, monkeypatch):
    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(fileio.os, "replace", refuse)
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "new" / "out", "--device", "generic")
    assert refused(r, "Permission denied"), r.output
    assert not (work / "new").exists()                       # the folders this run made are gone again
    r = invoke(export_main, ckpt, "-o", work / "e" / "m.onnx", "--no-verify")
    assert refused(r, "Permission denied"), r.output
    assert listing(work) == ["afile", "m.onnx", "x1.npy", "x2.npy"]


# --------------------------------------------------------------------------- one rule for missing folders

def test_zor_run_makes_missing_output_folders_and_removes_them_when_the_run_fails(work):
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "one", "--device", "generic", "-q")
    assert r.exit_code == 0 and (work / "one" / "x1.npy").is_file(), r.output
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "a" / "b" / "c", "--device", "generic")
    assert r.exit_code == 0 and (work / "a" / "b" / "c" / "x1.npy").is_file(), r.output
    r = invoke(run_main, work / "m.onnx", work / "x1.npy", "-o", work / "f" / "g" / "y.npy", "--device", "generic")
    assert r.exit_code == 0 and (work / "f" / "g" / "y.npy").is_file(), r.output
    np.save(work / "wide.npy", np.zeros((2, 9), np.float32))          # the wrong width: the run fails
    r = invoke(run_main, work / "m.onnx", work / "wide.npy", "-o", work / "p" / "q", "--device", "generic")
    assert r.exit_code == 2 and "expected shape" in r.output, r.output
    assert not (work / "p").exists()
    r = invoke(run_main, "--help")
    assert "missing folders are created" in " ".join(r.output.split())


def test_export_from_python_refuses_its_own_checkpoint_as_output(tmp_path):
    from zor.export import export

    from zor.common.errors import OutputPathError

    ck = tmp_path / "ck.zor"
    Zor([Layer(4), Layer(3), Layer(4)], seed=0).save(ck)
    before = ck.read_bytes()
    with pytest.raises(OutputPathError, match="same file"):
        export(str(ck), ck)
    assert ck.read_bytes() == before
