"""Minimal PNG reading and writing with the standard library (zlib) and numpy.

The runtime may not depend on Pillow, so ``zor-run`` reads and writes PNG itself.
Read: non-interlaced PNG, bit depth 8 or 16 (16 keeps the high byte), colour
types grey (0, also 1/2/4-bit), RGB (2), palette (3, 1-8 bit), grey+alpha (4) and
RGBA (6); alpha is dropped. Write: 8-bit grey (H, W) or RGB (H, W, 3). Scanline filters 0-4 are
undone as the PNG specification defines them (Paeth predictor included).

Example:
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "a.png")
    >>> write_png(p, np.arange(12, dtype=np.uint8).reshape(3, 4))
    >>> read_png(p).tolist()[1]
    [4, 5, 6, 7]
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Union

import numpy as np

from zor.common.errors import DataError
from zor.common.fileio import write_bytes_atomic

__all__ = ["read_png", "write_png", "SIGNATURE"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _chunks(data: bytes, where: str):
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise DataError(f"{where}: truncated PNG chunk {kind!r}: expected {length} bytes, got {len(body)}")
        yield kind, body
        pos += 12 + length
        if kind == b"IEND":
            return
    raise DataError(f"{where}: truncated PNG: expected an IEND chunk, reached the end of the file")


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, where: str) -> np.ndarray:
    if len(raw) != height * (stride + 1):
        raise DataError(f"{where}: PNG image data is {len(raw)} bytes: expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):
            cur = np.zeros(stride, np.int32)
            for x in range(stride):                       # left-dependent filters go byte by byte
                a = cur[x - bpp] if x >= bpp else 0
                b = prev[x]
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) >> 1
                else:
                    c = prev[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise DataError(f"{where}: PNG row {y} has filter type {ftype}: expected 0-4")
        out[y] = cur
        prev = cur
    return out


def read_png(path: Union[str, os.PathLike]) -> np.ndarray:
    """The pixels of a PNG as uint8, (H, W) for grey or (H, W, 3) for colour."""
    path = Path(path)
    where = str(path)
    data = path.read_bytes()
    if not data.startswith(SIGNATURE):
        raise DataError(f"{where}: expected a PNG file (signature 89 50 4E 47 ...), got {data[:8]!r}")
    header = palette = None
    idat = []
    for kind, body in _chunks(data, where):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise DataError(f"{where}: PNG has no IHDR chunk")
    width, height, depth, ctype, _, _, interlace = header
    low = depth in (1, 2, 4) and ctype in (0, 3)                 # packed grey or palette samples
    if ctype not in _CHANNELS or not (depth in (8, 16) or low) or (ctype == 3 and depth == 16):
        raise DataError(f"{where}: PNG colour type {ctype} at bit depth {depth} is not supported: expected "
                        "8- or 16-bit grey/RGB/grey+alpha/RGBA, or 1/2/4/8-bit grey or palette")
    if interlace:
        raise DataError(f"{where}: interlaced PNG is not supported: expected a non-interlaced PNG")
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as exc:
        raise DataError(f"{where}: corrupt PNG image data ({exc})") from None
    channels = _CHANNELS[ctype]
    if low:
        stride = (width * depth + 7) // 8
        packed = _unfilter(raw, height, stride, 1, where)
        bits = np.unpackbits(packed, axis=1).reshape(height, stride * 8 // depth, depth)
        values = (bits * (1 << np.arange(depth - 1, -1, -1, dtype=np.uint8))).sum(axis=2)[:, :width]
        if ctype == 0:                                            # scale grey 0..2^d−1 onto 0..255
            values = values * (255 // ((1 << depth) - 1))
        pix = values.astype(np.uint8)
        depth = 8
    else:
        bpp = channels * depth // 8
        pix = _unfilter(raw, height, width * bpp, bpp, where)
    if depth == 16:
        pix = (pix.reshape(height, width * channels, 2)[..., 0])   # high byte of big-endian samples
    img = pix.reshape(height, width, channels)
    if ctype == 3:
        if palette is None:
            raise DataError(f"{where}: palette PNG without a PLTE chunk")
        img = palette[np.minimum(img[..., 0], len(palette) - 1)]
    elif ctype in (4, 6):
        img = img[..., :-1]
    return img[..., 0] if img.shape[-1] == 1 else img


def write_png(path: Union[str, os.PathLike], image: np.ndarray) -> None:
    """Write uint8 (H, W) grey or (H, W, 3) RGB pixels as a PNG, atomically."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise DataError(f"write_png: expected uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        ctype, channels = 0, 1
    elif img.ndim == 3 and img.shape[2] == 3:
        ctype, channels = 2, 3
    else:
        raise DataError(f"write_png: expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    h, w = img.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * channels)], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    data = (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    write_bytes_atomic(path, data)
