"""Limits a small or careless input cannot get past: pixels, threads, batch, memory, overflow, lines.

One test per class of issue 22's "memory taken by small files" and "silent nonsense":
a PNG declaring a huge image is refused from its header (and decodes without a
uint64 intermediate when allowed), thread counts and bench batches are bounded by the
machine, running out of memory says so with the batch's needs, finite inputs that
overflow the charges raise instead of returning NaN, and translation keeps one output
line per input line.
"""

import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zlib

import numpy as np
import pytest
from click.testing import CliRunner
from test_runtime_support import build_model
from test_translation_text import _spec
from zor.runtime import Model
from zor.runtime import cli as runtime_cli
from zor.runtime.bench import run_bench
from zor.runtime.checks import check_batch_memory, run_failure
from zor.runtime.cli import bench_main, run_main
from zor.runtime.png import DEFAULT_MAX_PIXELS, SIGNATURE, read_png, write_png
from zor.runtime.session import THREADS_PER_CPU, check_threads, max_threads
from zor.runtime.tasks import load_image
from zor.runtime.tasks.translate import text_lines

from zor.common.errors import (
    ConfigError,
    DataError,
    InputError,
    ModelFileError,
    NonFiniteError,
)
from zor.common.textdecode import one_line, translate_texts
from zor.common.tokenizer import EOS

INF = float("inf")
IMAGE_TASK = {"name": "reconstruct", "input": {"shape": [16], "range": [0, 1], "image": {"height": 4, "width": 4}},
              "output": {"shape": [16], "range": [0, 1]}}


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _png(width: int, height: int, depth: int, ctype: int, raw: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, ctype, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def recon(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    rng = np.random.default_rng(0)
    return build_model(d / "recon.onnx", [{"size": 16}, {"size": 8, "activation": "relu"},
                                          {"size": 16, "activation": "sigmoid"}],
                       [rng.normal(size=(16, 8)), rng.normal(size=(8, 16))],
                       [np.full(16, 0.2), np.zeros(8), np.full(16, -INF)], task=IMAGE_TASK)


@pytest.fixture(scope="module")
def gain(tmp_path_factory):
    """Output = 10 × input: finite inputs near float32's largest overflow the charges."""
    d = tmp_path_factory.mktemp("gain")
    return build_model(d / "gain.onnx", [{"size": 3}, {"size": 3}], [np.eye(3) * 10.0],
                       [np.full(3, -INF), np.full(3, -INF)])


# --------------------------------------------------------------------------- pixels
def test_a_small_png_declaring_a_huge_image_is_refused_from_its_header(tmp_path):
    width = height = 30000                                      # 1-bit: 109 KB of file, 900 Mpx
    data = _png(width, height, 1, 0, bytes((width // 8 + 1) * height))
    assert len(data) < 200_000
    (tmp_path / "big.png").write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"30000x30000 image \(900,000,000 pixels\): expected at most "
                                            r"67,108,864 pixels.*--max-pixels"):
            read_png(tmp_path / "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(data) + 1_000_000                      # nothing decoded: about the file's bytes
    with pytest.raises(DataError, match="expected at most 67,108,864 pixels"):
        load_image(tmp_path / "big.png")
    assert DEFAULT_MAX_PIXELS == 8192 * 8192


def test_max_pixels_raises_or_lowers_the_limit(tmp_path):
    img = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120).astype(np.uint8)
    write_png(tmp_path / "a.png", img)
    with pytest.raises(DataError, match="100x120|120x100"):
        read_png(tmp_path / "a.png", max_pixels=11_999)
    assert np.array_equal(read_png(tmp_path / "a.png", max_pixels=12_000), img)
    assert np.array_equal(load_image(tmp_path / "a.png", max_pixels=None), img)
    for bad in (0, -1, 1.5, True, "10"):
        with pytest.raises(ConfigError, match="max_pixels"):
            read_png(tmp_path / "a.png", max_pixels=bad)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_low_bit_depths_decode_without_a_wide_intermediate(tmp_path, depth):
    side = 2000                                                  # 4 Mpx: an uint64 intermediate is 32 MB
    rng = np.random.default_rng(depth)
    values = rng.integers(0, 1 << depth, size=(side, side), dtype=np.uint8)
    per = 8 // depth
    packed = np.zeros((side, side // per), np.uint8)
    for k in range(per):
        packed |= (values[:, k::per] << (8 - depth * (k + 1))).astype(np.uint8)
    raw = np.concatenate([np.zeros((side, 1), np.uint8), packed], axis=1).tobytes()
    (tmp_path / "low.png").write_bytes(_png(side, side, depth, 0, raw))
    tracemalloc.start()
    try:
        out = read_png(tmp_path / "low.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(out, values * (255 // ((1 << depth) - 1)))
    assert peak < 5 * side * side                                # a few uint8 planes, never 8 bytes a pixel


def test_a_png_whose_data_inflates_past_its_header_is_refused(tmp_path):
    (tmp_path / "bomb.png").write_bytes(_png(4, 4, 8, 0, bytes(50_000_000)))   # 4x4 declared, 50 MB inside
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="inflates past the 20 bytes its header declares"):
            read_png(tmp_path / "bomb.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000


def test_zor_run_max_pixels_flag(recon, tmp_path):
    write_png(tmp_path / "img.png", np.zeros((4, 4), np.uint8))
    args = [str(recon), str(tmp_path / "img.png"), "-o", str(tmp_path / "out.npy"), "--device", "generic", "-q"]
    res = CliRunner().invoke(run_main, args + ["--max-pixels", "15"])
    assert res.exit_code == 2 and "expected at most 15 pixels" in res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(run_main, args + ["--max-pixels", "16"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(run_main, args + ["--max-pixels", "0"])
    assert res.exit_code == 2


# --------------------------------------------------------------------------- threads and batch
def test_threads_are_bounded_by_the_machine(recon, tmp_path):
    bound = max_threads()
    assert bound >= THREADS_PER_CPU and check_threads(bound) == bound and check_threads(None) is None
    for bad in (10**6, bound + 1):
        with pytest.raises(ConfigError, match=rf"threads: expected at most {bound} \({THREADS_PER_CPU} per CPU"):
            Model(recon, device="generic", threads=bad)
    for bad in (0, -2, 1.5, True, "4"):
        with pytest.raises(ConfigError, match="threads: expected a positive int"):
            Model(recon, device="generic", threads=bad)
    np.save(tmp_path / "x.npy", np.zeros((1, 16), np.float32))
    res = CliRunner().invoke(run_main, [str(recon), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                                        "--device", "generic", "--threads", "100000"])
    assert res.exit_code == 2 and "threads: expected at most" in res.output and not (tmp_path / "y.npy").exists()


def test_bench_batch_is_bounded_by_memory(recon):
    with pytest.raises(ConfigError, match=r"batch 100,000,000: a batch that large needs at least 20.86 GiB "
                                          r"\(100,000,000 rows × 56 input and unit values × 4 bytes\), but this "
                                          r"process may take 1.00 GiB: expected a batch of at most 4,793,490"):
        check_batch_memory(100_000_000, [16, 8, 16], budget=2**30)
    check_batch_memory(64, [16, 8, 16], budget=2**30)
    with pytest.raises(ConfigError, match="a batch that large needs"):
        run_bench([str(recon)], device="generic", batch=10**15, calls=1, repeats=1, threads=1, rss=False)
    res = CliRunner().invoke(bench_main, [str(recon), "--device", "generic", "--batch", str(10**15), "--no-rss",
                                          "--calls", "1", "--repeats", "1"])
    assert res.exit_code == 2 and "a batch that large needs" in res.output and "Traceback" not in res.output


# --------------------------------------------------------------------------- memory running out
def test_onnxruntime_allocation_failure_is_named_as_memory(recon):
    feeds = {"input": np.zeros((200_000, 16), np.float32)}
    text = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running MatMul node. Status "
            "Message: bfc_arena.cc:360 Failed to allocate memory for requested buffer of size 2400000000")
    err = run_failure("m.onnx", RuntimeError(text), feeds, [16, 8, 16])
    assert isinstance(err, InputError)
    assert "memory ran out running a batch of 200,000 rows: its charges need at least 31 MiB" in str(err)
    assert "a buffer of 2,289 MiB" in str(err) and "split it" in str(err)
    assert isinstance(run_failure("m.onnx", MemoryError(), feeds, [16, 8, 16]), InputError)
    other = run_failure("m.onnx", RuntimeError("Invalid rank for input"), feeds, [16, 8, 16])
    assert isinstance(other, ModelFileError) and "onnxruntime failed on valid inputs" in str(other)


def test_a_batch_past_the_memory_limit_says_memory_ran_out(tmp_path):
    path = build_model(tmp_path / "wide.onnx", [{"size": 100}, {"size": 3000}],
                       [np.ones((100, 3000))], [np.zeros(100), np.full(3000, -INF)])
    code = textwrap.dedent(f"""
        import resource, numpy as np
        from zor.runtime import Model
        from zor.common.errors import InputError
        m = Model({str(path)!r}, device="generic", threads=1)
        x = np.ones((200_000, 100), np.float32)
        size = int([l for l in open("/proc/self/status") if l.startswith("VmSize:")][0].split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 400 * 2**20, resource.RLIM_INFINITY))
        try:
            m.run(x)
        except InputError as exc:
            print("OK", exc)
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith("OK"), proc.stdout + proc.stderr[-2000:]
    assert "memory ran out running a batch of 200,000 rows: its charges need at least 2,365 MiB" in proc.stdout


# --------------------------------------------------------------------------- overflow
def test_finite_inputs_that_overflow_the_charges_raise(gain):
    m = Model(gain, device="generic", threads=1)
    np.testing.assert_allclose(m.run(np.ones((2, 3), np.float32))["output"], 10.0)
    with pytest.raises(NonFiniteError, match=r"output: the model gave 0 NaN and 3 inf values from finite inputs "
                                             r"\(largest \|value\| fed: 3.4e\+38\): the charges overflowed float32"):
        m.run(np.full((1, 3), 3.4e38, np.float32))
    with pytest.raises(NonFiniteError, match="charges overflowed"):
        m(np.array([[1.0, -3.4e38, 0.0]], np.float32))
    with pytest.raises(NonFiniteError, match="expected finite values"):            # non-finite input: as before
        m.run(np.full((1, 3), np.inf, np.float32))


# --------------------------------------------------------------------------- lines
SEPARATORS = ["\u2028", "\u2029", "\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\r"]


def test_text_lines_split_on_newline_only():
    assert text_lines("a\u2028b\nc\fd\ne\n") == ["a\u2028b", "c\fd", "e"]
    assert text_lines("a\r\nb\r\n") == ["a", "b"]                      # Windows line ends
    assert text_lines("a\n\nb") == ["a", "", "b"] and text_lines("") == [] and text_lines("\n") == [""]
    for sep in SEPARATORS:
        assert one_line(f"x{sep}y") == "x y" and len(f"{one_line(f'x{sep}y')}".splitlines()) == 1


def test_translation_keeps_one_line_per_input_line():
    spec = _spec()

    def step(x):
        out = np.zeros((len(x), spec.encoder.target_vocab), np.float32)
        out[:, EOS] = 1.0
        return out

    texts = ["uno\u2028dos", "dos\ftres", "uno"]
    out = translate_texts(texts, spec, step)
    assert len(out) == 3 and all(len(o.splitlines()) <= 1 for o in out)


def test_zor_run_translate_reads_lines_on_newline_only(tmp_path, monkeypatch):
    seen = []

    def fake_translate(model, lines, beam=None):
        seen.append(list(lines))
        return [f"t{i}\u2028x" for i in range(len(lines))]         # a separator inside an output, too

    monkeypatch.setattr(runtime_cli.tasks, "translate", fake_translate)
    src = tmp_path / "in.txt"
    src.write_text("uno\u2028dos\ntres\fcuatro\ncinco\n", encoding="utf-8")
    runtime_cli._run_task(None, "translate", 1, src, tmp_path / "out.txt", True, True)
    assert seen == [["uno\u2028dos", "tres\fcuatro", "cinco"]]
    written = (tmp_path / "out.txt").read_text(encoding="utf-8")
    assert len(written.splitlines()) == 3, repr(written)
