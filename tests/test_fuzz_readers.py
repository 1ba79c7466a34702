"""Fuzzing the three readers of untrusted bytes: no exception but the toolkit's own.

- :mod:`zor.runtime.png`: random bytes, and PNGs with random headers, filters and data;
  only DataError (a ZorError) may come out.
- :mod:`zor.runtime.onnxmeta`: random protobuf-ish bytes and mutated real exports;
  only its documented ScanError (which the loader turns into a ModelFileError) or a
  ZorError may come out.
- the checkpoint reader: random bytes, mutated headers and flipped bytes of a real
  checkpoint; only CheckpointError may come out.

Each test runs a few thousand small examples with no deadline (bounded time: small
inputs, ``max_examples`` fixed).
"""

import io
import json
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_runtime_support import build_model
from zor.runtime.onnxmeta import (
    ScanError,
    _scan,
    find_initializers,
    read_metadata_props,
)
from zor.runtime.png import SIGNATURE, read_png, write_png

from zor import Layer, Zor
from zor.common.errors import CheckpointError, ZorError

FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=list(HealthCheck))


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


# --------------------------------------------------------------------------- PNG
@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def _read_png_bytes(folder, data: bytes, max_pixels=4096) -> None:
    path = folder / "f.png"
    path.write_bytes(data)
    try:
        out = read_png(path, max_pixels=max_pixels)
    except ZorError:
        return
    assert out.dtype == np.uint8 and out.ndim in (2, 3)


@FUZZ
@given(data=st.binary(max_size=300))
def test_png_random_bytes(scratch, data):
    _read_png_bytes(scratch, SIGNATURE + data)
    _read_png_bytes(scratch, data)


@st.composite
def _pngs(draw):
    width, height = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    depth = draw(st.sampled_from([1, 2, 4, 8, 16, 3, 0, 255]))
    ctype = draw(st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7]))
    interlace = draw(st.sampled_from([0, 0, 0, 1]))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, interlace)
    ihdr = ihdr[:draw(st.sampled_from([13, 13, 13, 5, 0, 12]))]
    stride = (width * depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype, 1) + 7) // 8
    rows = bytearray(draw(st.binary(min_size=0, max_size=min(2000, height * (stride + 1) + 2))))
    for y in range(0, len(rows), stride + 1):
        rows[y] = draw(st.sampled_from([0, 1, 2, 3, 4, 4, 5]))           # filter bytes, mostly valid
    body = zlib.compress(bytes(rows)) if draw(st.booleans()) else bytes(rows)
    chunks = [_chunk(b"IHDR", ihdr)]
    if draw(st.booleans()):
        chunks.append(_chunk(b"PLTE", draw(st.binary(max_size=30))))
    cut = draw(st.integers(0, len(body)))
    chunks += [_chunk(b"IDAT", body[:cut]), _chunk(b"IDAT", body[cut:]), _chunk(b"IEND", b"")]
    data = SIGNATURE + b"".join(draw(st.permutations(chunks)) if draw(st.booleans()) else chunks)
    return data[:draw(st.integers(8, len(data)))] if draw(st.booleans()) else data


@FUZZ
@given(data=_pngs())
def test_png_structured(scratch, data):
    _read_png_bytes(scratch, data)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4))
def test_png_flipped_bytes_of_a_real_file(scratch, flips):
    path = scratch / "real.png"
    if not path.exists():
        write_png(path, (np.random.default_rng(0).random((6, 5, 3)) * 255).astype(np.uint8))
    data = bytearray(path.read_bytes())
    for pos, value in flips:
        data[pos % len(data)] = value
    _read_png_bytes(scratch, bytes(data))


# --------------------------------------------------------------------------- onnxmeta
def _meta_call(fn) -> None:
    try:
        fn()
    except (ScanError, ZorError):
        pass


@st.composite
def _protobufs(draw, depth=0):
    """Bytes that look like protobuf: valid keys, varints and lengths, sometimes wrong."""
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        field = draw(st.sampled_from([1, 2, 5, 7, 8, 9, 14, 0, 2**28]))
        wire = draw(st.sampled_from([0, 1, 2, 2, 2, 5, 3, 7]))
        key = (field << 3) | wire
        parts.append(_varint(key))
        if wire == 0:
            parts.append(_varint(draw(st.sampled_from([0, 1, 127, 2**63, 2**70]))))
        elif wire == 2:
            inner = draw(_protobufs(depth + 1)) if depth < 3 and draw(st.booleans()) else draw(st.binary(max_size=12))
            n = len(inner) + draw(st.sampled_from([0, 0, 0, 1, -1, 2**62, 2**69]))
            parts.append(_varint(max(n, 0)) + inner)
        else:
            parts.append(draw(st.binary(max_size=8)))
    return b"".join(parts)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# Found by this test (fixed): a declared entry length ≥ 2**63 made onnxmeta._entry raise OverflowError.
@FUZZ
@given(data=st.one_of(st.binary(max_size=200), _protobufs()))
@example(data=b"r\x0b\x02\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01")
def test_onnxmeta_scanner(scratch, data):
    _meta_call(lambda: _scan(io.BytesIO(data), len(data)))
    path = scratch / "f.onnx"
    path.write_bytes(data)
    _meta_call(lambda: read_metadata_props(path))
    _meta_call(lambda: find_initializers(path, ["weight_0", "threshold_0", ""]))


@pytest.fixture(scope="module")
def real_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    build_model(path, [{"size": 3}, {"size": 2}], [np.ones((3, 2))], [np.zeros(3), np.full(2, -np.inf)])
    return path.read_bytes()


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.integers(0, 100_000))
def test_onnxmeta_mutated_real_export(scratch, real_onnx, flips, cut):
    data = bytearray(real_onnx)
    for pos, value in flips:
        data[pos % len(data)] = value
    data = bytes(data[:len(data) - cut % 50])
    path = scratch / "g.onnx"
    path.write_bytes(data)
    _meta_call(lambda: read_metadata_props(path))
    _meta_call(lambda: find_initializers(path, ["weight_0", "threshold_1"]))


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture(scope="module")
def real_ckpt(tmp_path_factory):
    net = Zor([Layer(3, decay=0.5), Layer(2)], seed=0, device="cpu")
    net.train_batch(torch.ones(2, 3), torch.ones(2, 2))
    path = tmp_path_factory.mktemp("ck") / "c.zor"
    net.save(path)
    return path.read_bytes()


def _load_ckpt(folder, data: bytes) -> None:
    path = folder / "c.zor"
    path.write_bytes(data)
    try:
        Zor.load(path, device="cpu")
    except CheckpointError:
        pass


@FUZZ
@given(data=st.binary(max_size=300))
def test_checkpoint_random_bytes(scratch, data):
    _load_ckpt(scratch, data)
    _load_ckpt(scratch, len(data).to_bytes(8, "little") + data)


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=3))
def test_checkpoint_flipped_bytes(scratch, real_ckpt, flips):
    data = bytearray(real_ckpt)
    for pos, value in flips:
        data[pos % len(data)] = value
    _load_ckpt(scratch, bytes(data))


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 10**19) | st.floats() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                   max_size=3), max_leaves=8)


@FUZZ
@given(where=st.sampled_from(["config", "layer", "network", "optimizer_state", "format_version", "header"]),
       value=_JSON)
def test_checkpoint_mutated_header(scratch, real_ckpt, where, value):
    n = int.from_bytes(real_ckpt[:8], "little")
    header = json.loads(real_ckpt[8:8 + n])
    meta = header["__metadata__"]
    config = json.loads(meta["config"])
    if where == "config":
        meta["config"] = json.dumps(value)
    elif where == "layer":
        config["layers"][1] = value
        meta["config"] = json.dumps(config)
    elif where == "network":
        config["network"] = value
        meta["config"] = json.dumps(config)
    elif where == "header":
        header[str(value)[:10] or "x"] = value
    else:
        meta[where] = json.dumps(value) if where == "optimizer_state" else str(value)
    text = json.dumps(header).encode()
    _load_ckpt(scratch, len(text).to_bytes(8, "little") + text + real_ckpt[8 + n:])
