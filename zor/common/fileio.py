"""Atomic file writes, and the checks every output path passes before any work starts.

Atomic writes: a temp file in the target folder, then a rename. A reader never sees a
half-written file, and a failed write leaves the old file (or no file) in place. A temp
file is named ``.NAME.XXXXXXXX.PID.zor.tmp`` (NAME the destination, XXXXXXXX random,
PID the writer's process id); a writer that was killed leaves one behind, and the next
write to the same destination removes it (:func:`remove_stale_temps`: its writer is
gone, or it is older than :data:`STALE_AFTER_S`).

Output paths (one rule for every command-line tool and for ``export()``),
:func:`check_output_file` and :func:`check_output_folder`:

- an output may not be the same file as an input (symlinks and hard links included:
  the same device and inode), since writing it would destroy the input;
- an output file may not be a folder, and its folder must be a folder, not a file;
- the folder must be writable, or, when the caller creates missing folders
  (:func:`output_folders`), its nearest existing parent must be.

Every failure is an :class:`~zor.common.errors.OutputPathError` (exit code 2), also
when the operating system refuses the write itself. Torch-free; used by checkpoints,
the exporter and the runtime.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_bytes_atomic(p, b"hello"); p.read_bytes()
    b'hello'
    >>> check_output_file(p, inputs=[p])
    Traceback (most recent call last):
    ...
    zor.common.errors.OutputPathError: ... is the same file as the input ...
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

from .errors import OutputPathError

__all__ = ["write_bytes_atomic", "write_text_atomic", "atomic_path", "write_figure_png", "check_output_file",
           "check_output_folder", "check_not_an_input", "same_file", "output_folders", "remove_stale_temps",
           "TEMP_SUFFIX", "STALE_AFTER_S"]

PathLike = Union[str, os.PathLike]

TEMP_SUFFIX = ".zor.tmp"       # our temp files: .NAME.XXXXXXXX.PID.zor.tmp
STALE_AFTER_S = 3600.0         # a temp file this old is stale even if a process with its writer's PID runs
_RANDOM = "[a-z0-9_]{8}"       # tempfile.mkstemp's random part


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same device and inode when both exist (symlinks
    followed, hard links included), else the same absolute path once symlinks are resolved."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def check_not_an_input(path: PathLike, inputs: Iterable[Optional[PathLike]], what: str = "output") -> None:
    """OutputPathError when ``path`` is the same file as one of ``inputs`` (None entries are skipped)."""
    for source in inputs:
        if source is not None and same_file(path, source):
            raise OutputPathError(f"{what} {path} is the same file as the input {source}: writing it would destroy "
                                  "the input; expected another output path")


def _nearest_existing(folder: Path) -> Path:
    here = folder
    while not here.exists() and here != here.parent:
        here = here.parent
    return here


def check_output_folder(folder: PathLike, create: bool = False, what: str = "output folder") -> None:
    """OutputPathError unless files can be written into ``folder``: it is a writable folder, or (``create``)
    it can be made: its nearest existing parent is a writable folder."""
    folder = Path(folder)
    if not create and not folder.exists():
        raise OutputPathError(f"cannot write into {folder}: {what} {folder} does not exist (create it first)")
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise OutputPathError(f"cannot write into {folder}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write into {folder}: the folder {base} is not writable (permission denied)")


def check_output_file(path: PathLike, inputs: Iterable[Optional[PathLike]] = (), create: bool = False,
                      what: str = "output") -> Path:
    """``path`` as a Path once it passes the output rules of the module (``create``: its folder may be
    missing, the caller makes it with :func:`output_folders`); OutputPathError otherwise."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, expected a file path")
    check_not_an_input(path, inputs, what)
    check_output_folder(path.parent, create=create, what="its folder")
    return path


@contextmanager
def output_folders(folder: PathLike) -> Iterator[list[Path]]:
    """Create ``folder`` and its missing parents (checked first, :func:`check_output_folder`); yield the
    folders created. When the block fails, the created folders that are still empty are removed again,
    so a failed command leaves no empty folder behind."""
    folder = Path(folder)
    check_output_folder(folder, create=True)
    missing = []
    here = folder
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    created: list[Path] = []
    try:
        for sub in reversed(missing):
            try:
                sub.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputPathError(f"cannot create the folder {sub}: {exc.strerror or exc}") from None
            created.append(sub)
        yield created
    except BaseException:
        for sub in reversed(created):
            try:
                sub.rmdir()                 # only if still empty
            except OSError:
                break
        raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True                         # another user's process, or nothing we may ask about: keep its file
    return True


def remove_stale_temps(path: PathLike, now: Optional[float] = None) -> list[Path]:
    """Remove the temp files our atomic writes left for the destination ``path`` when their writer was
    killed: ``.NAME.XXXXXXXX.PID.zor.tmp`` whose PID no longer runs or that is older than
    :data:`STALE_AFTER_S`, and the older unnamed-writer form ``.NAME.XXXXXXXX.tmp`` past that age.
    Returns the files removed; files it cannot stat or remove are left alone."""
    path = Path(path)
    now = time.time() if now is None else now
    name = re.escape(path.name)
    ours = re.compile(rf"\.{name}\.{_RANDOM}\.(\d+){re.escape(TEMP_SUFFIX)}")
    legacy = re.compile(rf"\.{name}\.{_RANDOM}\.tmp")
    removed = []
    try:
        entries = os.listdir(path.parent)
    except OSError:
        return removed
    for entry in entries:
        m = ours.fullmatch(entry)
        if m is None and legacy.fullmatch(entry) is None:
            continue
        tmp = path.parent / entry
        try:
            old = now - tmp.stat().st_mtime > STALE_AFTER_S
            if old or (m is not None and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1)))):
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            continue
    return removed


def _check_parent(path: Path) -> None:
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, expected a file path")
    check_output_folder(path.parent, what="folder")


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is renamed to ``path``.

    For writers that want a filename (e.g. onnx.save). On any exception the temp file is
    removed and ``path`` is untouched; stale temp files of earlier, killed writes to
    ``path`` are removed first (:func:`remove_stale_temps`).
    """
    path = Path(path)
    _check_parent(path)
    remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{os.getpid()}{TEMP_SUFFIX}")
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())   # mkstemp makes 0600; give the file normal permissions
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        _replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _replace(tmp: Path, path: Path) -> None:
    try:
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_figure_png(fig: Any, path: PathLike, dpi: int = 80, colors: Optional[int] = None) -> None:
    """Save a matplotlib figure as a PNG, atomically; ``colors`` quantizes it to a palette of that many
    colours (needs Pillow), which keeps figures committed to the repository small."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if colors is not None:
        from PIL import Image

        small = io.BytesIO()
        Image.open(buf).convert("RGB").quantize(colors=colors).save(small, format="PNG", optimize=True)
        buf = small
    write_bytes_atomic(path, buf.getvalue())
