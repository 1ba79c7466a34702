"""Atomic file writes: a temp file in the target folder, then a rename.

A reader never sees a half-written file, and a failed write leaves the old file (or
no file) in place. Torch-free; used by checkpoints, the exporter and the runtime.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> write_bytes_atomic(p, b"hello"); p.read_bytes()
    b'hello'
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from .errors import OutputPathError

__all__ = ["write_bytes_atomic", "write_text_atomic", "atomic_path", "write_figure_png"]


def _check_parent(path: Path) -> None:
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: folder {parent} does not exist (create it first)")
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a folder, expected a file path")


@contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is renamed to ``path``.

    For writers that want a filename (e.g. onnx.save). On any exception the temp
    file is removed and ``path`` is untouched.
    """
    path = Path(path)
    _check_parent(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())   # mkstemp makes 0600; give the file normal permissions
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Union[str, os.PathLike], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Union[str, os.PathLike], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_figure_png(fig: Any, path: Union[str, os.PathLike], dpi: int = 80, colors: Optional[int] = None) -> None:
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
