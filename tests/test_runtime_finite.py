"""zor.runtime.checks.all_finite: the dot-product shortcut agrees with np.isfinite(x).all() on every array,
including overflowing sums of finite values (3e38 + 3e38 = inf, yet every element is finite)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.runtime.checks import all_finite

SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, 1.0])


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 70), cols=st.sampled_from([1, 7, 64, 784]),
       hits=st.lists(st.tuples(st.integers(0, 10**6), SPECIAL), max_size=4))
def test_all_finite_matches_isfinite(rows, cols, hits):
    x = np.random.default_rng(rows * cols).standard_normal((rows, cols)).astype(np.float32)
    for where, value in hits:
        x.flat[where % x.size] = value
    assert all_finite(x) == bool(np.isfinite(x).all())


def test_overflowing_sum_of_finite_values_is_finite():
    x = np.full((64, 784), 3e38, np.float32)        # Σ overflows to inf: the exact test must decide
    assert all_finite(x)
    x[63, 783] = np.nan
    assert not all_finite(x)


def test_non_float32_and_strided_arrays_take_the_exact_test():
    x = np.ones((64, 784), np.float64)
    assert all_finite(x)
    y = np.ones((64, 1568), np.float32)[:, ::2]       # not C-contiguous
    y[5, 5] = np.inf
    assert not all_finite(y)
