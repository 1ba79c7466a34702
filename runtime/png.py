"""Minimal PNG reading and writing with the standard library (zlib) and numpy.

The runtime may not depend on Pillow, so ``zor-run`` reads and writes PNG itself.
Read: non-interlaced PNG, bit depth 8 or 16 (16 keeps the high byte), colour
types grey (0, also 1/2/4-bit), RGB (2), palette (3, 1-8 bit), grey+alpha (4) and
RGBA (6); alpha is dropped. Write: 8-bit grey (H, W) or RGB (H, W, 3). Scanline filters 0-4 are
undone as the PNG specification defines them (Paeth predictor included).

A small file can declare a huge image (a 109 KB PNG can say 30000 × 30000), so the
reader checks the declared size against ``max_pixels`` before it decompresses
anything, and never inflates more bytes than that size needs. The default,
:data:`DEFAULT_MAX_PIXELS`, is 64 Mpx (8192 × 8192); pass a larger ``max_pixels`` (or
``None`` for no limit) to read larger images (``zor-run --max-pixels``). Every malformed
file raises :class:`~zor.common.errors.DataError` saying what was expected.

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
from typing import Iterator, Optional, Union

import numpy as np

from zor.common.errors import ConfigError, DataError
from zor.common.fileio import write_bytes_atomic

__all__ = ["read_png", "write_png", "check_max_pixels", "SIGNATURE", "DEFAULT_MAX_PIXELS"]

SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024          # 64 Mpx, 8192 × 8192: what read_png decodes unless told more
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def check_max_pixels(max_pixels: Optional[int]) -> Optional[int]:
    """``max_pixels`` checked: an int ≥ 1, or None for no limit (ConfigError otherwise)."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                   or max_pixels < 1):
        raise ConfigError(f"max_pixels: expected an int ≥ 1 or None (no limit), got {max_pixels!r}")
    return max_pixels


def _chunks(data: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
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


def _sequential_row(ftype: int, line: list, prev: list, bpp: int) -> list:
    """One row under filter 1 (Sub), 3 (Average) or 4 (Paeth): each byte depends on the one to its left."""
    cur = [0] * len(line)
    for x, value in enumerate(line):
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
        cur[x] = (value + pred) & 0xFF
    return cur


def _unfilter(raw: bytes, height: int, stride: int, bpp: int, where: str) -> np.ndarray:
    if len(raw) != height * (stride + 1):
        raise DataError(f"{where}: PNG image data is {len(raw)} bytes: expected {height * (stride + 1)}")
    rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prev = np.zeros(stride, np.uint8)
    for y in range(height):
        ftype, line = int(rows[y, 0]), rows[y, 1:]
        if ftype == 0:
            out[y] = line
        elif ftype == 2:
            np.add(line, prev, out=out[y])                        # uint8 arithmetic wraps mod 256
        elif ftype in (1, 3, 4):
            out[y] = _sequential_row(ftype, line.tolist(), prev.tolist(), bpp)
        else:
            raise DataError(f"{where}: PNG row {y} has filter type {ftype}: expected 0-4")
        prev = out[y]
    return out


def _header(body: bytes, where: str, max_pixels: Optional[int]) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from an IHDR body, checked before anything is decoded."""
    if len(body) != 13:
        raise DataError(f"{where}: PNG IHDR chunk is {len(body)} bytes: expected 13")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    if width == 0 or height == 0:
        raise DataError(f"{where}: PNG declares a {width}x{height} image: expected a width and height ≥ 1")
    if max_pixels is not None and width * height > max_pixels:
        raise DataError(f"{where}: PNG declares a {width}x{height} image ({width * height:,} pixels): expected at "
                        f"most {max_pixels:,} pixels; raise the limit (max_pixels=..., zor-run --max-pixels) "
                        "to read a larger image")
    low = depth in (1, 2, 4) and ctype in (0, 3)                 # packed grey or palette samples
    if ctype not in _CHANNELS or not (depth in (8, 16) or low) or (ctype == 3 and depth == 16):
        raise DataError(f"{where}: PNG colour type {ctype} at bit depth {depth} is not supported: expected "
                        "8- or 16-bit grey/RGB/grey+alpha/RGBA, or 1/2/4/8-bit grey or palette")
    if interlace:
        raise DataError(f"{where}: interlaced PNG is not supported: expected a non-interlaced PNG")
    return width, height, depth, ctype


def _inflate(idat: list, expected: int, where: str) -> bytes:
    """The image data decompressed, never more than ``expected`` bytes (+1 to tell "too long")."""
    d = zlib.decompressobj()
    try:
        raw = d.decompress(b"".join(idat), expected + 1)
    except zlib.error as exc:
        raise DataError(f"{where}: corrupt PNG image data ({exc})") from None
    if len(raw) > expected:
        raise DataError(f"{where}: PNG image data inflates past the {expected:,} bytes its header declares")
    return raw


def _unpack(packed: np.ndarray, depth: int, width: int) -> np.ndarray:
    """Samples of 1, 2 or 4 bits, packed big-end first in each byte, as uint8 (H, width)."""
    if depth == 1:
        return np.unpackbits(packed, axis=1)[:, :width]
    per = 8 // depth
    mask = (1 << depth) - 1
    out = np.empty((packed.shape[0], packed.shape[1] * per), np.uint8)
    for k in range(per):
        out[:, k::per] = (packed >> (8 - depth * (k + 1))) & mask
    return out[:, :width]


def read_png(path: Union[str, os.PathLike], max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of a PNG as uint8, (H, W) for grey or (H, W, 3) for colour.

    An image of more than ``max_pixels`` pixels (default 64 Mpx; None: no limit) is refused
    from its header, before any decoding; every malformed file raises DataError.
    """
    check_max_pixels(max_pixels)
    path = Path(path)
    where = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{where}: cannot read the PNG file ({exc.strerror or exc})") from None
    if not data.startswith(SIGNATURE):
        raise DataError(f"{where}: expected a PNG file (signature 89 50 4E 47 ...), got {data[:8]!r}")
    header = palette = None
    idat = []
    for kind, body in _chunks(data, where):
        if kind == b"IHDR":
            header = _header(body, where, max_pixels)
        elif kind == b"PLTE":
            if not body or len(body) % 3 or len(body) > 768:
                raise DataError(f"{where}: PNG palette is {len(body)} bytes: expected 3 bytes per entry, 1-256 entries")
            palette = np.frombuffer(body, np.uint8).reshape(-1, 3)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise DataError(f"{where}: PNG has no IHDR chunk")
    return _decode(header, idat, palette, where)


def _decode(header: tuple[int, int, int, int], idat: list, palette: Optional[np.ndarray], where: str) -> np.ndarray:
    """The image from the checked header, the IDAT chunks and the palette (see :func:`read_png`)."""
    width, height, depth, ctype = header
    if ctype == 3 and palette is None:
        raise DataError(f"{where}: palette PNG without a PLTE chunk")
    channels = _CHANNELS[ctype]
    if depth < 8:
        stride = (width * depth + 7) // 8
        packed = _unfilter(_inflate(idat, height * (stride + 1), where), height, stride, 1, where)
        pix = _unpack(packed, depth, width)
        if ctype == 0:                                            # scale grey 0..2^d−1 onto 0..255
            pix *= np.uint8(255 // ((1 << depth) - 1))
    else:
        bpp = channels * depth // 8
        pix = _unfilter(_inflate(idat, height * (width * bpp + 1), where), height, width * bpp, bpp, where)
        if depth == 16:
            pix = pix.reshape(height, width * channels, 2)[..., 0]   # high byte of big-endian samples
    img = pix.reshape(height, width, channels)
    if ctype == 3:
        img = palette[np.minimum(img[..., 0], len(palette) - 1)]
    elif ctype in (4, 6):
        img = img[..., :-1]
    return np.ascontiguousarray(img[..., 0] if img.shape[-1] == 1 else img)


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
