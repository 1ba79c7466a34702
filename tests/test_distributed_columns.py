"""The columns exchange (tensor parallel, zor.engine.tensorparallel) on CPU with gloo.

Two processes, each handed its half (24 rows) of the same global batch of 48 under
``ZOR_DP_EXCHANGE=columns``, each owning half of every layer's units above the input,
must end where one process training on the whole batch ends: weights, thresholds, firing
rates, novelty traces and the optimizer's moments within 1e-6 after 50 steps (the bound of
tests/test_distributed_step.py, which this file reuses: the same networks, data and
comparison). Only the signal sent down (a sum over the ranks' partial products), the norm
clip's ‖U‖ (partial row norms) and the error scale change their order of summation.

Also: a checkpoint of a stale rank is refused, and the gathered rank-0 checkpoint has the
one-process checkpoint's format; a run stopped and resumed equals the uninterrupted one
(``zor.train`` under torchrun); networks the exchange cannot split are refused by name;
``auto`` takes the exchange from 1024 units up, and fit's validation then sees whole weights;
fit's step on the whole global batch gives the bits of the step on shards;
``benchmarks/scaling_cpu.py`` reports every rank.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_distributed_fit import (
    RUN,
    _env,
    _max_diff,
    _port,
    _run,
    _torchrun,
    _weights,
)
from test_distributed_step import STEPS, WORLD, _run_ranks, _single, make_net

from zor import Layer, Zor
from zor.engine import checkpoint_file, tensorparallel

TOL = 1e-6
RULES = ["gated", "normalized", "coactivity", "post_spikes", "uneven"]


def _columns_env() -> dict[str, str]:
    return {**os.environ, "ZOR_DP_EXCHANGE": "columns"}


@pytest.mark.parametrize("rule", RULES)
def test_two_ranks_by_columns_equal_one_process(tmp_path, rule):
    """Every rule, novelty gating on a hidden layer, and layers that split unevenly (21 = 11 + 10, 13 = 7 + 6)."""
    _run_ranks(tmp_path, rule, env=_columns_env())
    want = _single(rule)
    failures = []
    for r in range(WORLD):
        assert (tmp_path / f"rank{r}.exchange").read_text() == "columns"
        assert "call net.reducer.gather_state(net) on every rank first" in (tmp_path / f"rank{r}.save").read_text()
        for name, value in want.items():
            got = np.load(tmp_path / f"rank{r}.{name}.npy")
            finite = np.isfinite(value)
            bound = TOL * max(1.0, float(np.abs(value[finite]).max(initial=0.0)))
            if not np.array_equal(finite, np.isfinite(got)) or not np.allclose(got[finite], value[finite], rtol=0,
                                                                               atol=bound):
                failures.append(f"rank {r} {name}: max diff {np.abs(got[finite] - value[finite]).max():.3g}")
    assert not failures, failures
    moved = np.abs(want["weights_0"] - make_net(rule).weights[0].detach().numpy()).max()
    assert moved > 1e-3, "the weights did not move: the comparison would prove nothing"
    assert want["optim_0_step"] == STEPS


@pytest.fixture(scope="module")
def one_checkpoint(tmp_path_factory) -> Path:
    """The reference: 1 process × batch 48 for 50 steps of zor.train."""
    path = tmp_path_factory.mktemp("one") / "one.zor"
    r = _run([sys.executable, "-m", "zor.train", *RUN, "--single", "--checkpoint", str(path)])
    assert r.returncode == 0, r.stderr
    return path


def _launch(args: list[str]) -> subprocess.CompletedProcess:
    return _run(_torchrun("--nproc-per-node", "2", "--master-port", str(_port())) + args,
                env=_env(ZOR_DP_EXCHANGE="columns"))


def _same_format(path: Path, reference: Path) -> None:
    """Same tensor names, shapes and dtypes, same metadata keys as the reference checkpoint; values within TOL."""
    got, want = checkpoint_file.read(path, "cpu"), checkpoint_file.read(reference, "cpu")
    assert sorted(got.tensors) == sorted(want.tensors)
    for name, ref in want.tensors.items():
        assert got.tensors[name].shape == ref.shape and got.tensors[name].dtype == ref.dtype, name
        if not name.startswith("train."):
            a, b = got.tensors[name].double(), ref.double()
            finite = torch.isfinite(b)
            assert torch.equal(torch.isfinite(a), finite) and torch.equal(a[~finite], b[~finite]), name
            diff = float((a[finite] - b[finite]).abs().max()) if finite.any() else 0.0
            assert diff <= TOL * max(1.0, float(b[finite].abs().max()) if finite.any() else 0.0), (name, diff)
    assert sorted(got.optim_keys) == sorted(want.optim_keys)
    assert got.training is not None and sorted(got.training) == sorted(want.training)


@pytest.fixture(scope="module")
def columns_checkpoint(tmp_path_factory) -> Path:
    """2 ranks × 24 rows by columns for 50 steps of zor.train, uninterrupted."""
    path = tmp_path_factory.mktemp("columns") / "two.zor"
    r = _launch([*RUN, "--checkpoint", str(path)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world_size=2" in r.stdout and r.stdout.count("steps=50") == 1
    return path


def test_fit_by_columns_equals_one_process_and_its_checkpoint_format(one_checkpoint, columns_checkpoint):
    assert _max_diff(_weights(columns_checkpoint), _weights(one_checkpoint)) <= TOL
    _same_format(columns_checkpoint, one_checkpoint)


def test_fit_by_columns_stopped_and_resumed_equals_uninterrupted(one_checkpoint, columns_checkpoint, tmp_path):
    """Stopped at step 23 (checkpoints every 10 on the way), resumed to 50 by a second launch: the uninterrupted
    columns run's checkpoint, and within TOL of one process."""
    path = tmp_path / "resumed.zor"
    first = [*RUN[:RUN.index("--steps")], "--steps", "23", *RUN[RUN.index("--steps") + 2:]]
    r = _launch([*first, "--checkpoint", str(path), "--checkpoint-every", "10"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _launch([*RUN, "--checkpoint", str(path), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "start_step=23" in r.stdout and "steps=50" in r.stdout
    assert _max_diff(_weights(path), _weights(columns_checkpoint)) <= TOL
    assert _max_diff(_weights(path), _weights(one_checkpoint)) <= TOL
    _same_format(path, columns_checkpoint)


@pytest.mark.parametrize("layers, overrides, message", [
    ([Layer(8), Layer(1), Layer(8)], {}, "layer(s) [1] have fewer units than the 2 ranks"),
    ([Layer(8), Layer(6, decay=0.5), Layer(8)], {}, "layer(s) [1] are stateful"),
    ([Layer(8), Layer(6), Layer(8)], {"weight_average": 0.99}, "weight averaging reads every weight"),
    ([Layer(8), Layer(6), Layer(8)], {"optimizer": "sgd"}, "not a fused Adam/AdamW"),
])
def test_networks_the_columns_exchange_cannot_split_are_named(layers, overrides, message):
    net = Zor(layers, seed=0, device="cpu", **overrides)
    assert tensorparallel.why_not(net, 2) == message or message in (tensorparallel.why_not(net, 2) or "")
    assert tensorparallel.why_not(Zor([Layer(8), Layer(6), Layer(8)], seed=0, device="cpu"), 2) is None


def test_columns_on_a_network_it_cannot_split_is_a_config_error(tmp_path):
    """ZOR_DP_EXCHANGE=columns on SGD: both ranks stop with the reason, before any step."""
    logs = _run_ranks(tmp_path, "sgd", env=_columns_env())
    for r in range(WORLD):
        msg = (tmp_path / f"rank{r}.err").read_text()
        assert "ZOR_DP_EXCHANGE=columns: this network cannot split by output units" in msg, logs
        assert "not a fused Adam/AdamW" in msg


AUTO_WORKER = '''
import sys
import numpy as np, torch, torch.distributed as dist
from zor import Layer, Zor

rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
x = torch.rand(64, 1024, generator=torch.Generator().manual_seed(3))
net = Zor([Layer(1024), Layer(1024), Layer(1024)], seed=0, device="cpu")
hist = net.fit(x, steps=4, batch_size=8, distributed=True, validation=(x[:16], x[:16]), eval_every=2, progress=False)
open(out + ".exchange", "w").write(net.reducer.exchange)
np.save(out + ".val.npy", np.array([v["accuracy"] for _, v in hist.val]))
np.save(out + ".w1.npy", net.weights[1].detach().numpy())
dist.destroy_process_group()
'''


def test_auto_takes_columns_from_1024_units_and_validation_sees_whole_weights(tmp_path):
    """auto picks the columns exchange where every layer above the input has ≥ 1024 units; fit's validation during
    the run scores the whole weights (gathered first), as one process's run does."""
    script = tmp_path / "auto.py"
    script.write_text(AUTO_WORKER)
    init = f"file://{tmp_path / 'rendezvous'}"
    env = {k: v for k, v in os.environ.items() if k != "ZOR_DP_EXCHANGE"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init, str(tmp_path / f"rank{r}")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    for p in procs:
        log = p.communicate(timeout=180)[0]
        assert p.returncode == 0, log
    x = torch.rand(64, 1024, generator=torch.Generator().manual_seed(3))
    torch.set_num_threads(1)
    one = Zor([Layer(1024), Layer(1024), Layer(1024)], seed=0, device="cpu")
    hist = one.fit(x, steps=4, batch_size=8, validation=(x[:16], x[:16]), eval_every=2, progress=False)
    want = np.array([v["accuracy"] for _, v in hist.val])
    for r in range(WORLD):
        assert (tmp_path / f"rank{r}.exchange").read_text() == "columns"
        assert np.allclose(np.load(tmp_path / f"rank{r}.val.npy"), want, rtol=0, atol=1e-4), "validation scores"
        assert np.abs(np.load(tmp_path / f"rank{r}.w1.npy") - one.weights[1].detach().numpy()).max() <= TOL


def test_scaling_cpu_benchmark_reports_every_rank(tmp_path):
    """benchmarks/scaling_cpu.py end to end on a tiny network: one row for 1 process and one per rank, each with
    positive CPU seconds, and the bound 2 · cpu(1) / Σ cpu(ranks) computed from them."""
    out = tmp_path / "cpu.json"
    r = _run([sys.executable, "-m", "benchmarks.scaling_cpu", "--layers", "16,8,16", "--batch", "8", "--steps", "2",
              "--warmup", "1", "--exchange", "columns", "--json", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["processes"], row["exchange"], row["rank"]) for row in rows] == \
        [(1, "-", 0), (2, "columns", 0), (2, "columns", 1)]
    assert all(row["cpu_s"] > 0 and row["wall_s"] > 0 for row in rows)
    total = rows[1]["cpu_s"] + rows[2]["cpu_s"]
    assert rows[1]["bound"] == pytest.approx(2 * rows[0]["cpu_s"] / total, rel=1e-9)
    assert "CPU time per training step" in r.stdout


def test_scaling_benchmark_reports_whole_run_and_steady_rates(tmp_path):
    """benchmarks/scaling.py end to end on a tiny network, columns against 1 process: each run's whole-run and
    steady samples/s (zor.train's), the speed-ups as their ratios (one round: the ratio itself), the weights within
    1e-6."""
    out = tmp_path / "scaling.json"
    r = _run([sys.executable, "-m", "benchmarks.scaling", "--layers", "16,8,16", "--batch", "8", "--steps", "4",
              "--rounds", "1", "--exchange", "columns", "--json", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    rows, runs = result["rows"], result["runs"]
    assert [(row["processes"], row["exchange"]) for row in rows] == [(1, "-"), (2, "columns")]
    for key in ("samples_per_s", "steady_samples_per_s"):
        one, two = runs["1"][0][key], runs["columns"][0][key]
        assert one > 0 and two > 0 and rows[1][key] == two
        assert rows[1]["speedup" if key == "samples_per_s" else "steady_speedup"] == pytest.approx(two / one, rel=1e-9)
    assert rows[1]["max_weight_diff"] <= TOL
    assert "whole run samples/s" in r.stdout and "steady samples/s" in r.stdout


WHOLE_WORKER = '''
import sys
import numpy as np, torch, torch.distributed as dist
sys.path.insert(0, sys.argv[5])
from test_distributed_step import make_net, data, state_of

rank, init, out, rule = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
whole, shards = make_net(rule, distributed=True), make_net(rule, distributed=True)
assert whole.reducer.whole_batch and shards.reducer.exchange == "columns"
xs = data()[:12]                                                   # (steps, 48, 36): the global batches
errors = []
for x in xs:
    e = whole.reducer.train_whole(whole, x, x)                      # (48,): the whole batch's, on every rank
    rows = shards.train_batch(x[rank * 24:(rank + 1) * 24], x[rank * 24:(rank + 1) * 24])   # (24, 36)
    errors.append((e.numpy().copy(), rows.abs().mean(dim=1).numpy()))
for net in (whole, shards):
    net.reducer.gather_state(net)
np.savez(out + ".whole.npz", **state_of(whole))
np.savez(out + ".shards.npz", **state_of(shards))
np.savez(out + ".errors.npz", whole=np.stack([w for w, _ in errors]), rows=np.stack([r for _, r in errors]))
dist.destroy_process_group()
'''


@pytest.mark.parametrize("rule", ["gated", "normalized", "uneven"])
def test_fit_whole_batch_step_equals_the_shard_step_bit_for_bit(tmp_path, rule):
    """fit's columns step (every rank handed the whole global batch: no rows, output or error move; the per-sample
    errors come from the step's own all-reduce) gives the bits of the train_batch step on shards (which moves the
    input rows, the output and the error): weights, θ, rates, novelty traces and moments equal, on both ranks.
    Its per-sample errors e_b = mean_j |error_bj| of the whole batch equal the shards' rows within float rounding
    (partial sums over each rank's units, added: 1e-6 relative), and both ranks hold the same ones."""
    script = tmp_path / "whole.py"
    script.write_text(WHOLE_WORKER)
    init, here = f"file://{tmp_path / 'rendezvous'}", str(Path(__file__).parent)
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init, str(tmp_path / f"rank{r}"), rule, here],
                              env=_columns_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(WORLD)]
    for p in procs:
        log = p.communicate(timeout=180)[0]
        assert p.returncode == 0, log
    every = [np.load(tmp_path / f"rank{r}.errors.npz") for r in range(WORLD)]
    assert np.array_equal(every[0]["whole"], every[1]["whole"])
    by_rows = np.concatenate([e["rows"] for e in every], axis=1)    # (steps, 48): rank 0's rows, then rank 1's
    assert every[0]["whole"].shape == by_rows.shape == (12, 48)
    assert np.allclose(every[0]["whole"], by_rows, rtol=1e-6, atol=0)
    for r in range(WORLD):
        whole, shards = np.load(tmp_path / f"rank{r}.whole.npz"), np.load(tmp_path / f"rank{r}.shards.npz")
        assert sorted(whole.files) == sorted(shards.files)
        for name in whole.files:
            assert np.array_equal(whole[name], shards[name]), (r, name)
        moved = np.abs(whole["weights_0"] - make_net(rule).weights[0].detach().numpy()).max()
        assert moved > 1e-4, "the weights did not move: the comparison would prove nothing"


PROFILED_WORKER = '''
import sys
import numpy as np, torch, torch.distributed as dist
from torch.profiler import profile, ProfilerActivity
from zor import Layer, Zor

rank, init = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
net = Zor([Layer(32), Layer(24), Layer(16), Layer(32)], seed=0, device="cpu", distributed=True)
x = torch.rand(16, 32, generator=torch.Generator().manual_seed(0))[rank * 8:(rank + 1) * 8]
for step in range(4):
    with profile(activities=[ProfilerActivity.CPU]) as prof:   # one profiler per step, as a user might
        net.train_batch(x, x)
    assert any(e.key == "aten::mm" for e in prof.key_averages())
net.reducer.gather_state(net)
print("rank", rank, "trained under the profiler", flush=True)
dist.destroy_process_group()
'''


def test_steps_profiled_one_by_one_do_not_crash(tmp_path):
    """The rows' swap travels from one step into the next; under torch.profiler a work that outlives the profiler
    that recorded it crashed the process (SIGSEGV), so while a profiler records the step waits for it."""
    script = tmp_path / "profiled.py"
    script.write_text(PROFILED_WORKER)
    init = f"file://{tmp_path / 'rendezvous'}"
    procs = [subprocess.Popen([sys.executable, str(script), str(r), init], env=_columns_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(WORLD)]
    for r, p in enumerate(procs):
        log = p.communicate(timeout=180)[0]
        assert p.returncode == 0, log[-3000:]
        assert f"rank {r} trained under the profiler" in log
