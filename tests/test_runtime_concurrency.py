"""Model.run is thread-safe: 8 threads on one Model give the results of one thread."""

import threading

import numpy as np
from test_runtime_support import build_model
from zor.runtime import Model

INF = float("inf")


def test_eight_threads_give_identical_results(tmp_path):
    rng = np.random.default_rng(0)
    path = build_model(tmp_path / "m.onnx", [{"size": 32}, {"size": 24, "activation": "relu"},
                                             {"size": 16, "activation": "sigmoid"}],
                       [rng.normal(size=(32, 24)), rng.normal(size=(24, 16))],
                       [np.full(32, 0.3), np.full(24, 0.1), np.full(16, -INF)])
    model = Model(path, device="generic", threads=1)
    inputs = rng.random((8, 20, 5, 32), dtype=np.float32)          # 8 threads × 20 calls × batch 5
    expected = [[model.run(x, spikes=True) for x in per_thread] for per_thread in inputs]
    got = [None] * 8
    start = threading.Barrier(8)

    def work(k):
        start.wait()                                                # all threads call at once
        got[k] = [model.run(x, spikes=True) for x in inputs[k]]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        for want, have in zip(expected[k], got[k]):
            assert set(want) == set(have)
            for name in want:
                np.testing.assert_array_equal(have[name], want[name])
