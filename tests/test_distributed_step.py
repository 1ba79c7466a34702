"""Exact data parallelism in the learning step (zor.engine.distributed, zor.engine.sharded), on CPU with gloo.

Two processes, each training on its half (24 rows) of the same global batch of 48,
must end where one process training on the whole batch ends: weights, thresholds,
firing rates, novelty traces and the optimizer's moments equal within 1e-6 after 50
steps (the ranks sum local sums; only float summation order differs; the 1e-6 is
relative to the largest magnitude of each array where that exceeds 1: the
``normalized`` rule's novelty trace tracks E = Σ_b s aᵀ, sums of up to 48 terms near
60, whose float32 spacing is 4e-6, so reordering them moves R by a few 1e-6 · 60).

Dense networks take the activations exchange (each rank updates its rows of every W_i):
all four rules, a network whose sizes do not split evenly over the ranks (21 and 13
units) with the norm clip and the weight clamp off on one layer each. A network with a
Conv layer, an SGD network and a run with ``ZOR_DP_EXCHANGE=all-reduce`` take the
all-reduce path and are exact the same way. Under the activations exchange a rank's
save before ``gather_state`` is refused (its moments are partly stale). Event (sparse)
input is refused under distributed=True. A rank holding different weights is refused
by name; distributed=True without a process group is refused with what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from zor import Layer, Zor
from zor.common.errors import ConfigError
from zor.engine.layer import Conv

STEPS, BATCH, WORLD = 50, 48, 2

WORKER = textwrap.dedent('''
    import sys
    import numpy as np, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[5])
    from test_distributed_step import make_net, data, state_of
    from zor.common.errors import ConfigError, StateError

    rank, init, out, rule, seed = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[6])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        net = make_net(rule, seed, distributed=True)
    except ConfigError as exc:
        open(out + ".err", "w").write(str(exc))
        dist.destroy_process_group()    # leaving with the group alive can abort in gloo's teardown (SIGABRT)
        sys.exit(0)
    xs = data()
    shard = xs.shape[1] // 2
    for step in range(xs.shape[0]):
        x = xs[step, rank * shard:(rank + 1) * shard]
        net.train_batch(x, x)
    open(out + ".exchange", "w").write(net.reducer.exchange)
    try:
        net.save(out + ".zor")
    except StateError as exc:
        open(out + ".save", "w").write(str(exc))
    net.reducer.gather_state(net)
    for name, value in state_of(net).items():
        np.save(f"{out}.{name}.npy", value)
    dist.destroy_process_group()
''')


# case -> the exchange two ranks take
CASES = {"gated": "activations", "normalized": "activations", "coactivity": "activations",
         "post_spikes": "activations", "uneven": "activations", "conv": "all-reduce", "sgd": "all-reduce",
         "forced": "all-reduce"}


def make_net(case: str, seed: int = 0, distributed: bool = False) -> Zor:
    rule, optimizer = (case, "adamw") if case in ("gated", "normalized", "coactivity", "post_spikes") \
        else ("gated", "sgd" if case == "sgd" else "adamw")
    if case == "conv":              # a Conv layer: its outer products sum over batch and positions
        layers = [Layer(36, shape=(1, 6, 6)), Conv(3, kernel_size=3), Layer(36)]
    elif case == "uneven":          # rows split 11 + 10 and 7 + 6 over two ranks
        layers = [Layer(36), Layer(21, novelty_factor=0.3, max_update_norm=None), Layer(13, max_weight=None),
                  Layer(36)]
    else:
        layers = [Layer(36), Layer(20, novelty_factor=0.3), Layer(12), Layer(36)]
    return Zor(layers, seed=seed, rule=rule, optimizer=optimizer, error_scaling=True, device="cpu",
               distributed=distributed)


def data() -> torch.Tensor:
    return torch.rand(STEPS, BATCH, 36, generator=torch.Generator().manual_seed(11))   # (steps, B, n_0)


def state_of(net: Zor) -> dict[str, np.ndarray]:
    """Everything that must agree: weights, θ, rates, novelty traces, the optimizer state."""
    out = {name.replace(".", "_"): t.detach().numpy().copy() for name, t in net.named_parameters()}
    out.update({name: t.detach().numpy().copy() for name, t in net.named_buffers()})
    for i, w in enumerate(net.weights):
        for key, value in net.optimizer.state[w].items():       # Adam: step, exp_avg, exp_avg_sq; SGD: momentum
            out[f"optim_{i}_{key}"] = torch.as_tensor(value).numpy().copy()
    assert any(k.startswith("optim_0_") for k in out), "no optimizer state to compare"
    return out


def _run_ranks(tmp_path, rule: str, seeds=(0, 0), env=None) -> list[str]:
    init = f"file://{tmp_path / 'rendezvous'}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    here = str(__import__("pathlib").Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init, str(tmp_path / f"rank{r}"), rule, here,
                               str(seeds[r])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env)
             for r in range(WORLD)]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=180)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("distributed ranks hung past 180 s")
        assert p.returncode == 0, f"rank failed:\n{logs[-1]}"
    return logs


def _single(rule: str) -> dict[str, np.ndarray]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = make_net(rule)
        xs = data()
        for step in range(STEPS):
            net.train_batch(xs[step], xs[step])
        return state_of(net)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("rule", list(CASES))
def test_two_ranks_of_24_equal_one_process_of_48(tmp_path, rule):
    env = {**os.environ, "ZOR_DP_EXCHANGE": "all-reduce"} if rule == "forced" else None
    _run_ranks(tmp_path, rule, env=env)
    for r in range(WORLD):
        assert (tmp_path / f"rank{r}.exchange").read_text() == CASES[rule]
        refused = tmp_path / f"rank{r}.save"
        assert refused.exists() == (CASES[rule] == "activations")
        if refused.exists():
            assert "call net.reducer.gather_state(net) on every rank first" in refused.read_text()
    want = _single(rule)
    failures = []
    for r in range(WORLD):
        for name, value in want.items():
            got = np.load(tmp_path / f"rank{r}.{name}.npy")
            finite = np.isfinite(value)
            if not np.array_equal(finite, np.isfinite(got)) or \
                    not np.allclose(got[finite], value[finite], rtol=0,
                                    atol=1e-6 * max(1.0, float(np.abs(value[finite]).max(initial=0.0)))):
                failures.append(f"rank {r} {name}: max diff {np.abs(got[finite] - value[finite]).max():.3g}")
    assert not failures, failures
    moved = np.abs(want["weights_0"] - make_net(rule).weights[0].detach().numpy()).max()
    assert moved > 1e-3, "the weights did not move: the comparison would prove nothing"


def test_ranks_with_different_weights_are_refused(tmp_path):
    _run_ranks(tmp_path, "gated", seeds=(0, 1))
    for r in range(WORLD):
        msg = (tmp_path / f"rank{r}.err").read_text()
        assert "rank(s) [1]" in msg and "same config, layer list and weights" in msg


def test_distributed_without_a_process_group_is_refused():
    import torch.distributed as dist

    assert not dist.is_initialized()
    with pytest.raises(ConfigError, match="init_process_group first, or launch with torchrun"):
        make_net("gated", distributed=True)
    net = make_net("gated")
    with pytest.raises(ConfigError, match="init_process_group"):
        net.set_distributed(True)
    assert net.distributed is False


def test_event_input_is_refused_under_distributed(monkeypatch):
    net = make_net("gated")
    monkeypatch.setattr(type(net), "distributed", property(lambda self: True))   # as if switched on
    x = torch.rand(4, 36)
    with pytest.raises(ConfigError, match="not supported with distributed=True"):
        net.train_batch(x.to_sparse(), x)
