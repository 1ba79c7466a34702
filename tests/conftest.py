import os

import numpy as np
import pytest

# Keep tests fast and deterministic on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Small matmuls on a shared 2-core machine: one torch thread is several times faster
    than two fighting over cores with other processes."""
    try:
        import torch
    except ImportError:  # a runtime-only environment
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def bench_folder(tmp_path_factory):
    """A folder with m.zor (128-96-16, seeded) and x.npy (32 rows) for the bench tests."""
    from zor import Layer, Zor

    folder = tmp_path_factory.mktemp("bench")
    net = Zor([Layer(128, threshold=0.9), Layer(96, threshold=0.4), Layer(16)], seed=0, device="cpu")
    net.save(folder / "m.zor")
    np.save(folder / "x.npy", np.random.default_rng(0).random((32, 128), dtype=np.float32))
    return folder


@pytest.fixture
def no_host_reads():
    """A context manager under which every way of reading a tensor back to the host (item, bool, float,
    int, index, tolist) raises AssertionError naming ``what``: on CUDA each would stall the stream."""
    import contextlib
    from unittest import mock

    import torch

    @contextlib.contextmanager
    def guard(what: str = "the training step"):
        def refuse(*args, **kwargs):
            raise AssertionError(f"{what} read a tensor back to the host")

        with contextlib.ExitStack() as stack:
            for name in ("__bool__", "__float__", "__int__", "__index__", "item", "tolist"):
                stack.enter_context(mock.patch.object(torch.Tensor, name, refuse))
            yield

    return guard
