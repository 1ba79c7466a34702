"""zor.common.fileio: stale temp files of killed writes, the output-path rules, write-time errors."""

import os
import subprocess
import sys
import time

import pytest

from zor.common import fileio
from zor.common.errors import OutputPathError
from zor.common.fileio import (
    TEMP_SUFFIX,
    atomic_path,
    check_output_file,
    check_output_folder,
    output_folders,
    remove_stale_temps,
    same_file,
    write_bytes_atomic,
)

# a writer that dies (SIGKILL) in the middle of an atomic write of ARG, leaving its temp file behind
CRASH = """
import os, signal, sys
from zor.common.fileio import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"x" * 100_000)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _temps(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_killed_writer_leaves_a_temp_file_of_our_naming_that_the_next_write_removes(tmp_path):
    target = tmp_path / "ckpt.zor"
    write_bytes_atomic(target, b"old")
    p = subprocess.Popen([sys.executable, "-c", CRASH, str(target)], stderr=subprocess.PIPE)
    assert p.wait(timeout=60) == -9, p.stderr.read()
    left = _temps(tmp_path)                                        # the crash's leftover, named with its PID
    assert len(left) == 1 and left[0].startswith(".ckpt.zor.") and left[0].endswith(f".{p.pid}{TEMP_SUFFIX}")
    assert target.read_bytes() == b"old"                           # the destination was never half-written
    write_bytes_atomic(target, b"new")                             # the next write to it cleans up
    assert _temps(tmp_path) == [] and target.read_bytes() == b"new"


def test_only_stale_temp_files_of_that_destination_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)                                    # a process that has ended
    live_pid = os.getppid()                                        # one that runs
    names = {
        "dead": f".m.onnx.abcd1234.{dead_pid}{TEMP_SUFFIX}",
        "live": f".m.onnx.abcd5678.{live_pid}{TEMP_SUFFIX}",
        "other_dest": f".m.onnx.weights.abcd1234.{dead_pid}{TEMP_SUFFIX}",
        "legacy_old": ".m.onnx.k3j2h1g0.tmp",
        "legacy_new": ".m.onnx.q9w8e7r6.tmp",
        "user_file": "m.onnx.tmp",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"partial")
    old = time.time() - fileio.STALE_AFTER_S - 60
    os.utime(tmp_path / names["legacy_old"], (old, old))
    removed = {p.name for p in remove_stale_temps(tmp_path / "m.onnx")}
    assert removed == {names["dead"], names["legacy_old"]}
    # a live writer's file goes only once it is older than STALE_AFTER_S (its PID may have been reused)
    os.utime(tmp_path / names["live"], (old, old))
    assert {p.name for p in remove_stale_temps(tmp_path / "m.onnx")} == {names["live"]}
    assert (tmp_path / names["other_dest"]).exists() and (tmp_path / "m.onnx.tmp").exists()


def test_a_failed_write_leaves_nothing_and_write_time_permission_errors_are_output_path_errors(tmp_path, monkeypatch):
    target = tmp_path / "out.npy"

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied", str(dst))

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises(OutputPathError, match="cannot write .*out.npy: Permission denied") as err:
        write_bytes_atomic(target, b"data")
    assert err.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


def test_unwritable_and_file_as_folder_outputs_are_refused_up_front(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_file(tmp_path / "afile" / "out.npy")
    with pytest.raises(OutputPathError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "afile" / "a" / "b", create=True)
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_file(tmp_path / "missing" / "out.npy")
    check_output_file(tmp_path / "missing" / "deeper" / "out.npy", create=True)     # can be made: fine
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: not mode & os.W_OK)   # root ignores chmod
    with pytest.raises(OutputPathError, match="not writable"):
        check_output_file(tmp_path / "out.npy")
    with pytest.raises(OutputPathError, match="not writable"):
        write_bytes_atomic(tmp_path / "out.npy", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_same_file_follows_symlinks_and_hard_links(tmp_path):
    a = tmp_path / "a.npy"
    a.write_bytes(b"data")
    (tmp_path / "link.npy").symlink_to(a)
    os.link(a, tmp_path / "hard.npy")
    assert same_file(a, tmp_path / "link.npy") and same_file(a, tmp_path / "hard.npy")
    assert same_file(a, tmp_path / "sub" / ".." / "a.npy")
    assert not same_file(a, tmp_path / "b.npy")
    for alias in ("a.npy", "link.npy", "hard.npy"):
        with pytest.raises(OutputPathError, match="same file as the input"):
            check_output_file(tmp_path / alias, inputs=[a])


def test_output_folders_are_made_with_parents_and_removed_when_the_block_fails(tmp_path):
    with output_folders(tmp_path / "a" / "b") as made:
        assert [p.name for p in made] == ["a", "b"]
    assert (tmp_path / "a" / "b").is_dir()
    with pytest.raises(RuntimeError):
        with output_folders(tmp_path / "x" / "y"):
            raise RuntimeError("the run failed before writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    with pytest.raises(RuntimeError):                  # something was written: the folder and the file stay
        with output_folders(tmp_path / "k"):
            (tmp_path / "k" / "one.npy").write_bytes(b"")
            raise RuntimeError("the second input failed")
    assert (tmp_path / "k" / "one.npy").exists()


def test_atomic_path_names_its_temp_file_for_the_destination_and_the_writer(tmp_path):
    with atomic_path(tmp_path / "w.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".w.bin.")
        assert tmp.name.endswith(f".{os.getpid()}{TEMP_SUFFIX}")
        tmp.write_bytes(b"ok")
    assert (tmp_path / "w.bin").read_bytes() == b"ok" and _temps(tmp_path) == []
