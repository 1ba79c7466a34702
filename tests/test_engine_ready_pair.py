"""zor.engine.inputs.ready_pair: a training step's (x, target) accepted in one check only when as_batch would
take both unchanged and every value is finite; anything else goes through as_batch, which names the fault."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zor import Layer, Zor
from zor.common.errors import NonFiniteError, ShapeError
from zor.engine.inputs import ready_pair

CPU = torch.device("cpu")


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 5), bad=st.sampled_from([None, math.nan, math.inf, -math.inf]),
       where=st.sampled_from(["x", "target"]), seed=st.integers(0, 2**16))
def test_ready_only_when_every_value_is_finite(rows, bad, where, seed):
    gen = torch.Generator().manual_seed(seed)
    x, target = torch.rand(rows, 4, generator=gen), torch.rand(rows, 3, generator=gen)
    if bad is not None:
        (x if where == "x" else target)[rows - 1, 1] = bad
    assert ready_pair(x, target, 4, 3, CPU) is (bad is None)


def test_a_sum_that_overflows_is_not_ready_but_finite():
    x = torch.full((2, 4), 3e38)                    # finite values whose float32 sum is inf
    assert not ready_pair(x, torch.zeros(2, 3), 4, 3, CPU)
    net = Zor([Layer(4), Layer(3)], seed=0, device="cpu")
    net.train_batch(x, torch.zeros(2, 3))           # as_batch's elementwise check passes them


@pytest.mark.parametrize("x, target", [
    (torch.rand(2, 4, dtype=torch.float64), torch.rand(2, 3)),     # another dtype: as_batch converts
    (np.random.rand(2, 4).astype(np.float32), torch.rand(2, 3)),     # an array
    (torch.rand(2, 5), torch.rand(2, 3)),                            # another width
    (torch.rand(2, 4), torch.rand(3, 3)),                            # rows that differ
    (torch.rand(0, 4), torch.rand(0, 3)),                            # no rows
    (torch.rand(2, 4).to_sparse(), torch.rand(2, 3)),                # an event batch
    (torch.rand(2, 4, 1), torch.rand(2, 3)),                         # three axes
])
def test_anything_as_batch_would_change_or_refuse_is_not_ready(x, target):
    assert not ready_pair(x, target, 4, 3, CPU)


def test_train_batch_names_the_bad_array():
    net = Zor([Layer(4), Layer(3)], seed=0, device="cpu")
    with pytest.raises(NonFiniteError, match="target"):
        net.train_batch(torch.rand(2, 4), torch.tensor([[0.0, math.nan, 0.0]] * 2))
    with pytest.raises(ShapeError, match=r"target: expected shape \(2, 3\)"):
        net.train_batch(torch.rand(2, 4), torch.rand(3, 3))
    x = torch.rand(2, 4)
    x[0, 0] = math.inf
    with pytest.raises(NonFiniteError, match="input"):
        net.train_batch(x, torch.rand(2, 3))
