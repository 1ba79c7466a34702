"""Property tests: random shapes, dtypes and values thrown at Model.run.

Whatever comes in, Model.run either returns finite outputs of the right shape (a 2-D
floating array of width n_0 with finite values) or raises the matching ZorError
subclass; never another exception.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_runtime_support import build_model
from zor.runtime import Model

from zor.common.errors import DTypeError, NonFiniteError, ShapeError, ZorError

WIDTH = 5
DTYPES = [np.float16, np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.bool_, np.complex64]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = build_model(tmp_path_factory.mktemp("p") / "m.onnx",
                       [{"size": WIDTH}, {"size": 4, "activation": "relu", "decay": 0.5}, {"size": 3,
                                                                                          "activation": "sigmoid"}],
                       [rng.normal(size=(WIDTH, 4)), rng.normal(size=(4, 3))],
                       [np.zeros(WIDTH), np.zeros(4), np.full(3, -np.inf)])
    return Model(path, device="generic", threads=1)


arrays = st.sampled_from(DTYPES).flatmap(lambda dt: hnp.arrays(
    dt, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6) | st.tuples(st.integers(0, 4),
                                                                                     st.just(WIDTH)),
    elements=hnp.from_dtype(np.dtype(dt), allow_nan=True, allow_infinity=True) if np.dtype(dt).kind in "fc"
    else None))


def expected_error(x):
    if x.dtype.kind != "f":
        return DTypeError
    if x.ndim != 2 or x.shape[1] != WIDTH or x.shape[0] == 0:
        return ShapeError
    with np.errstate(over="ignore"):
        if not np.isfinite(x).all() or not np.isfinite(x.astype(np.float32)).all():
            return NonFiniteError
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=arrays)
def test_run_accepts_good_input_and_names_bad_input(model, x):
    want = expected_error(x)
    if want is None:
        out = model.run(x, spikes=True)
        assert out["output"].shape == (x.shape[0], 3) and out["output"].dtype == np.float32
        assert np.isfinite(out["output"]).all()
        assert out["state_out_1"].shape == (x.shape[0], 4)
        assert ((0 <= out["spike_rates"]) & (out["spike_rates"] <= 1)).all()
    else:
        with pytest.raises(want) as info:
            model.run(x)
        assert isinstance(info.value, ZorError) and "expected" in str(info.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(keys=st.lists(st.sampled_from(["input", "state_in_1", "state_in_0", "output", "x"]), max_size=4, unique=True),
       batch=st.integers(1, 3), state_batch=st.integers(1, 3))
def test_dict_inputs_with_random_names(model, keys, batch, state_batch):
    feeds = {k: np.zeros((state_batch if k.startswith("state") else batch, 4 if k == "state_in_1" else WIDTH),
                         np.float32) for k in keys}
    unknown = set(keys) - {"input", "state_in_1"}
    if unknown or "input" not in keys or ("state_in_1" in keys and state_batch != batch):
        with pytest.raises(ShapeError):
            model.run(feeds)
    else:
        assert model.run(feeds)["output"].shape == (batch, 3)


def test_check_array_fast_path_keeps_every_check():
    """The short path (C-contiguous native float32 of the right width, all finite) returns the
    array itself; everything else, and every bad value, still takes the full path and its messages."""
    from runtime.checks import check_array

    x = np.arange(10, dtype=np.float32).reshape(2, WIDTH)
    assert check_array("input", x, WIDTH) is x                              # no copy
    big = np.full((1, WIDTH), 3e38, np.float32)                             # finite, near the float32 limit
    assert check_array("input", big, WIDTH) is big
    fortran = np.asfortranarray(np.arange(15, dtype=np.float32).reshape(3, WIDTH))
    strided = np.arange(20, dtype=np.float32).reshape(2, 2 * WIDTH)[:, ::2]
    swapped = x.astype(">f4")                                               # big-endian float32
    for odd in (fortran, strided, swapped):
        out = check_array("input", odd, WIDTH)
        assert out.flags.c_contiguous and out.dtype == np.float32 and out.dtype.isnative
        np.testing.assert_array_equal(out, odd)
    for bad, counts in (([np.nan], "1 NaN and 0 inf"), ([np.inf], "0 NaN and 1 inf"),
                        ([np.inf, -np.inf], "0 NaN and 2 inf")):
        y = np.zeros((2, WIDTH), np.float32)
        y.flat[[3, 7][:len(bad)]] = bad
        with pytest.raises(NonFiniteError, match=counts + r" entries \(first at \(0, 3\)\)"):
            check_array("input", y, WIDTH)
    with pytest.raises(ShapeError, match=r"expected shape \(3, 5\) to match the input's batch"):
        check_array("state_in_1", x, WIDTH, batch=3)
    with pytest.raises(ShapeError, match="empty batch"):
        check_array("input", np.zeros((0, WIDTH), np.float32), WIDTH)
