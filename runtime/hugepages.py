"""Row tensors of sparse connections in transparent huge pages: fewer TLB misses per gather.

A sparse connection reads only the weight rows of the units that spiked
(:mod:`zor.export.sparse`): at 5 % of a 4096 × 4096 float32 layer, about 205 rows of
16 KiB spread over 64 MiB. In 4 KiB pages each row spans four pages, and most of them
miss the TLB; in 2 MiB pages the whole tensor takes 32 entries. What it gained and cost
when measured: ``docs/notes/hugepages.md``.

On Linux the kernel backs an anonymous mapping with huge pages when asked
(``madvise(MADV_HUGEPAGE)``; transparent huge pages in "madvise" or "always" mode).
:func:`read_tensor` reads an initializer's bytes from the model file straight into
such a mapping, aligned to 2 MiB, and the runtime hands that array to onnxruntime in
place of the file's copy (``SessionOptions.add_initializer``, which uses the memory in
place); an external ``.weights`` file loaded whole is read into :func:`advised_buffer`
by :meth:`~zor.runtime.weightfile.WeightFile.tensor`, SHA-256 checked. Where the
kernel or the platform offers no huge pages the mapping is ordinary memory and only
the copy's cost remains: :data:`SUPPORTED` is False off Linux, and the device
profile's ``huge_pages`` turns the whole thing off.

Example:
    >>> buf = advised_buffer(3 << 20)
    >>> buf.nbytes, buf.ctypes.data % HUGE_PAGE == 0 or not SUPPORTED
    (3145728, True)
"""

from __future__ import annotations

import mmap
import os
import sys
from typing import Union

import numpy as np

from .onnxmeta import RawTensor, ScanError

__all__ = ["SUPPORTED", "HUGE_PAGE", "MIN_BYTES", "advised_buffer", "read_tensor"]

HUGE_PAGE = 2 << 20          # the x86-64 and aarch64 (4 KiB granule) transparent huge page
MIN_BYTES = HUGE_PAGE        # smaller tensors fit a few TLB entries anyway: left to onnxruntime
SUPPORTED = (sys.platform.startswith("linux") and sys.byteorder == "little"     # ONNX raw_data is little-endian
             and hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS"))


def advised_buffer(nbytes: int) -> np.ndarray:
    """A writable uint8 array of ``nbytes``, starting on a 2 MiB boundary of an anonymous
    mapping advised as huge pages (Linux); a plain numpy array elsewhere."""
    if nbytes < 0:
        raise ValueError(f"nbytes: expected ≥ 0, got {nbytes}")
    if not SUPPORTED or nbytes == 0:
        return np.empty(nbytes, dtype=np.uint8)
    area = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        area.madvise(mmap.MADV_HUGEPAGE)
    except OSError:                  # THP compiled out of this kernel: ordinary pages
        pass
    whole = np.frombuffer(area, dtype=np.uint8)        # keeps ``area`` alive as its base
    skip = (-whole.ctypes.data) % HUGE_PAGE
    return whole[skip:skip + nbytes]


def read_tensor(path: Union[str, os.PathLike, bytes], raw: RawTensor) -> np.ndarray:
    """The initializer ``raw`` of the ONNX file at ``path`` (or of the file's bytes, as the loader
    checked them), read into an :func:`advised_buffer` (dtype and shape from the file); ScanError
    when the file ends before its bytes do."""
    dtype = np.dtype(raw.dtype)
    count = int(np.prod(raw.shape, dtype=np.int64)) if raw.shape else 1
    if count * dtype.itemsize != raw.nbytes:
        raise ScanError(f"initializer {raw.name!r}: {raw.nbytes} bytes of data for shape {raw.shape} "
                        f"of {raw.dtype}, expected {count * dtype.itemsize}")
    buf = advised_buffer(raw.nbytes)
    if isinstance(path, bytes):
        if raw.offset + raw.nbytes > len(path):
            raise ScanError(f"initializer {raw.name!r}: the file ends before its bytes do")
        buf[:] = np.frombuffer(path, dtype=np.uint8, count=raw.nbytes, offset=raw.offset)
        return buf.view(dtype).reshape(raw.shape)
    view = memoryview(buf)
    with open(path, "rb") as f:
        f.seek(raw.offset)
        done = 0
        while done < raw.nbytes:
            n = f.readinto(view[done:])
            if not n:
                raise ScanError(f"initializer {raw.name!r}: the file ends {raw.nbytes - done} bytes early")
            done += n
    return buf.view(dtype).reshape(raw.shape)
