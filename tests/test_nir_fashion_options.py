"""The hidden-size option of benchmarks/nir_fashion.py: where a run's cache and figures go, the network it
builds, and what the command refuses (no training is started in these tests).

    result_paths(out, 128, False) = (out/nir_fashion,      out/nir_fashion.json)          the default size
    result_paths(out, 128, True)  = (out/nir_fashion,      out/nir_fashion_sweep.json)    --sweep-only
    result_paths(out, 256, False) = (out/nir_fashion_h256, out/nir_fashion_h256.json)     another size
    result_paths(out, 256, True)  = (out/nir_fashion_h256, out/nir_fashion_h256_sweep.json)

    build(H): Linear 784 → H (weight (H, 784), bias (H,)), Leaky H, Linear H → 10 (weight (10, H)), Leaky 10
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.nir_fashion import HIDDEN, main, result_paths


@pytest.mark.parametrize("hidden, sweep_only, folder, name", [
    (128, False, "nir_fashion", "nir_fashion.json"),
    (128, True, "nir_fashion", "nir_fashion_sweep.json"),
    (256, False, "nir_fashion_h256", "nir_fashion_h256.json"),
    (256, True, "nir_fashion_h256", "nir_fashion_h256_sweep.json"),
    (64, False, "nir_fashion_h64", "nir_fashion_h64.json"),
])
def test_result_paths_by_size(hidden: int, sweep_only: bool, folder: str, name: str) -> None:
    assert HIDDEN == 128
    assert result_paths(Path("res"), hidden, sweep_only) == (Path("res") / folder, Path("res") / name)


@given(a=st.integers(1, 4096), b=st.integers(1, 4096), sweep_a=st.booleans(), sweep_b=st.booleans())
def test_result_paths_never_shared_between_sizes(a: int, b: int, sweep_a: bool, sweep_b: bool) -> None:
    fa, ja = result_paths(Path("r"), a, sweep_a)
    fb, jb = result_paths(Path("r"), b, sweep_b)
    assert (fa == fb) == (a == b)                        # one cache folder per size
    assert (ja == jb) == (a == b and sweep_a == sweep_b)  # one JSON per size and kind of run
    assert ja.parent == fa.parent == Path("r") and ja.suffix == ".json"


def test_build_has_the_hidden_size() -> None:
    pytest.importorskip("snntorch")
    from benchmarks.nir_fashion import build

    net = build(256)
    shapes = [tuple(p.shape) for n, p in net.named_parameters() if n in ("0.weight", "0.bias", "2.weight", "2.bias")]
    assert shapes == [(256, 784), (256,), (10, 256), (10,)]


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_cli_refuses_a_bad_hidden_size(value: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["--hidden", value, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "--hidden" in res.output
    assert list(tmp_path.iterdir()) == []                # nothing trained, nothing written


def test_sweep_report_leaves_a_refused_scale_out_of_the_verdict() -> None:
    """Two timed scales (sparse ahead 1.02 > 1, but within dense/dense 1.03: not beyond the noise; dense above
    the break-even, met) and one scale whose export was refused: the verdict is over the two timed rows only."""
    from benchmarks.nir_fashion_sweep import sweep_report

    rows = [{"scale": 0.03, "plan": "0:sparse 2:dense", "met": True, "beyond_noise": False},
            {"scale": 0.7, "plan": "0:dense 2:dense", "met": True, "beyond_noise": None},
            {"scale": 1.0, "plan": "export refused", "refused": "VerificationError: outside tolerance"}]
    rep = sweep_report(rows, 256)
    assert rep["sparse_figure_met"] is True and rep["sparse_lead_beyond_noise"] is False
    assert rep["sweep_scales_refused"] == 1
    assert set(rep["profile"]) == {"name", "break_even_784x256", "break_even_256x10"}
    rows[0]["met"] = False                               # sparse behind dense where it went sparse: not met
    assert sweep_report(rows, 256)["sparse_figure_met"] is False
    assert sweep_report(rows[2:], 256)["sparse_figure_met"] is None   # nothing timed: no verdict


def test_roundtrip_reset_clears_the_imported_membranes() -> None:
    """snnTorch's importer builds Leaky(init_hidden=True) modules that keep their membrane between calls:
    after reset() a second pass over the same events must give the same output spikes as the first, both
    snnTorch's own recorded ones for the feed-forward fixture (its importer round-trips it exactly, over
    100 steps: docs/nir-frameworks.md). Without the reset, the second pass starts from the first one's end."""
    pytest.importorskip("snntorch")
    import numpy as np

    from benchmarks.nir_fashion import RoundTrip, stream_spikes

    fixture = Path(__file__).parent / "fixtures" / "nir" / "ff_lif"
    rec = np.load(fixture.with_suffix(".npz"))
    xs, want = rec["inputs"].astype(np.float32), rec["spikes_1"]    # (100, 16, 196), (100, 16, 10)
    s = RoundTrip(fixture.with_suffix(".nir")).stream()
    first = stream_spikes(s, xs)
    second = stream_spikes(s, xs)
    assert np.array_equal(first, want)
    assert np.array_equal(second, want)
