"""Data-parallel training (fit(distributed=True), zor.train under torchrun) and exact resume, on CPUs (gloo).

The reference is one process training on the global batch: N ranks each training on
B/N rows of every global batch must end with its weights within 1e-6. Every
subprocess runs with a timeout and one torch thread; ports are picked free.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from zor import Layer, Zor
from zor.common.errors import CheckpointError, ConfigError
from zor.tasks.datasets import load_bundled

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-6                      # the bound on |W(2 ranks × 24) − W(1 process × 48)|
RUN = ["--data", "bundled", "--layers", "784,32,784", "--steps", "50", "--batch-size", "48", "--threads", "1",
       "--no-progress", "--timeout", "60"]
LIMIT = 120                     # seconds any one launch may take

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE",
                                                            "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **extra)
    return env


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=kw.pop("env", _env()), capture_output=True, text=True,
                          timeout=LIMIT, **kw)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "zor.train"]


def _weights(path: Path) -> list[torch.Tensor]:
    return [w.detach().clone() for w in Zor.load(path, device="cpu").weights]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def one_process_checkpoint(tmp_path_factory) -> Path:
    """The reference: 1 process × batch 48 for 50 steps."""
    path = tmp_path_factory.mktemp("one") / "one.zor"
    r = _run([sys.executable, "-m", "zor.train", *RUN, "--single", "--checkpoint", str(path)])
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def one_process(one_process_checkpoint) -> list[torch.Tensor]:
    return _weights(one_process_checkpoint)


def _optimizer_state(path: Path) -> dict[str, torch.Tensor]:
    net = Zor.load(path, device="cpu")
    return {f"{i}.{k}": torch.as_tensor(v).clone() for i, w in enumerate(net.weights)
            for k, v in net.optimizer.state[w].items()}


def _check_optimizer_state(path: Path, reference: Path) -> None:
    """Every moment of the ranks' checkpoint equals the 1-process one: within TOL, and within 1e-3 of the largest
    moment (a row left stale by the rank that did not own it would be off by about that largest moment)."""
    got, want = _optimizer_state(path), _optimizer_state(reference)
    assert sorted(got) == sorted(want) and {k.split(".")[1] for k in want} == {"step", "exp_avg", "exp_avg_sq"}
    for key, ref in want.items():
        diff = float((got[key] - ref).abs().max())
        assert diff <= min(TOL, 1e-3 * float(ref.abs().max())) or diff == 0.0, (key, diff, float(ref.abs().max()))
        if key.endswith("exp_avg"):
            assert float(ref.abs().max()) > 1e-5, "the moments did not move: the comparison would prove nothing"


def test_two_ranks_equal_one_process_with_the_global_batch(one_process, one_process_checkpoint, tmp_path):
    """Dense 784-32-784 under torchrun takes the activations exchange (zor.engine.sharded): rank 0's checkpoint
    holds the whole optimiser state, gathered from both ranks."""
    path = tmp_path / "two.zor"
    r = _run(_torchrun("--nproc-per-node", "2", "--master-port", str(_port())) + [*RUN, "--checkpoint", str(path)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world_size=2" in r.stdout and r.stdout.count("steps=50") == 1      # rank 0 alone reports
    assert _max_diff(_weights(path), one_process) <= TOL
    _check_optimizer_state(path, one_process_checkpoint)


def test_two_ranks_stopped_and_resumed_equal_one_process(one_process, one_process_checkpoint, tmp_path):
    """2 ranks stop after 23 of 50 steps (checkpoints every 10 on the way) and a second launch resumes: the
    weights and the optimiser state equal the 1-process run's."""
    path = tmp_path / "resumed.zor"
    first = [*RUN[:RUN.index("--steps")], "--steps", "23", *RUN[RUN.index("--steps") + 2:]]
    r = _run(_torchrun("--nproc-per-node", "2", "--master-port", str(_port()))
             + [*first, "--checkpoint", str(path), "--checkpoint-every", "10"])
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(_torchrun("--nproc-per-node", "2", "--master-port", str(_port()))
             + [*RUN, "--checkpoint", str(path), "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "start_step=23" in r.stdout and "steps=50" in r.stdout
    assert _max_diff(_weights(path), one_process) <= TOL
    _check_optimizer_state(path, one_process_checkpoint)


def test_two_node_rendezvous_on_localhost_equals_one_process(one_process, tmp_path):
    """Two torchrun launches, one per 'node', meeting at a c10d rendezvous."""
    port, path = _port(), tmp_path / "nodes.zor"
    nodes = [subprocess.Popen(_torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                                        "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "zor-test")
                              + [*RUN, "--checkpoint", str(path)],
                              cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        outs = [p.communicate(timeout=LIMIT) for p in nodes]
    finally:
        for p in nodes:
            p.kill()
    assert [p.returncode for p in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    assert _max_diff(_weights(path), one_process) <= TOL


@pytest.mark.parametrize("exchange", ["auto", "columns"])   # columns: swaps still travelling when the rank dies
def test_a_dead_rank_makes_the_other_exit_naming_the_timeout(tmp_path, exchange):
    port, path = _port(), tmp_path / "run.zor"
    args = [sys.executable, "-m", "zor.train", "--data", "bundled", "--layers", "784,32,784", "--steps", "1000000",
            "--batch-size", "48", "--threads", "1", "--no-progress", "--timeout", "5", "--checkpoint", str(path),
            "--checkpoint-every", "5"]
    ranks = [subprocess.Popen(args, cwd=ROOT, env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                                                        WORLD_SIZE="2", LOCAL_RANK="0", ZOR_DP_EXCHANGE=exchange),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.monotonic() + LIMIT
        while not path.exists() and time.monotonic() < deadline and ranks[0].poll() is None:
            time.sleep(0.2)
        assert path.exists(), "the ranks never trained together"
        ranks[1].send_signal(signal.SIGKILL)
        _, err = ranks[0].communicate(timeout=60)                # must not hang
    finally:
        for p in ranks:
            p.kill()
    assert ranks[0].returncode == 1, err[-2000:]
    assert "rank 0" in err and "timeout of 5 s" in err and "Traceback" not in err, err[-2000:]


def test_a_world_size_that_does_not_divide_the_batch_is_refused():
    r = _run(_torchrun("--nproc-per-node", "2", "--master-port", str(_port()))
             + ["--data", "bundled", "--layers", "784,8,784", "--steps", "2", "--batch-size", "25", "--threads", "1",
                "--no-progress", "--timeout", "30"])
    assert r.returncode != 0                                   # torchrun adds its own report of the failed ranks
    assert "Error: batch_size 25 (the global batch) must be a multiple of the world size 2" in r.stderr


def test_ranks_with_different_configurations_are_refused_at_start():
    port = _port()
    ranks = [subprocess.Popen([sys.executable, "-m", "zor.train", "--data", "bundled", "--layers", "784,8,784",
                               "--steps", "2", "--threads", "1", "--no-progress", "--timeout", "30", "--lr", lr],
                              cwd=ROOT, env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(r),
                                                 WORLD_SIZE="2", LOCAL_RANK="0"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r, lr in enumerate(("0.001", "0.002"))]
    try:
        errs = [p.communicate(timeout=LIMIT)[1] for p in ranks]
    finally:
        for p in ranks:
            p.kill()
    assert [p.returncode for p in ranks] == [2, 2], errs
    assert all("ranks [1] run a different network configuration" in e for e in errs)


def test_missing_master_addr_is_named(monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    net = Zor([Layer(4), Layer(4)], seed=0, device="cpu")
    with pytest.raises(ConfigError, match="missing: MASTER_ADDR, RANK, WORLD_SIZE"):
        net.fit(np.zeros((8, 4), np.float32), steps=1, batch_size=4, progress=False, distributed=True)


# ---------------------------------------------------------------------------- resume, in one process

def _net(**kw) -> Zor:
    return Zor([Layer(784), Layer(24), Layer(784)], seed=0, device="cpu", **kw)


@pytest.mark.parametrize("beta", [0.0, 0.9])
def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path, beta):
    x = load_bundled("train")[0][:64]
    whole = _net(weight_average=beta)
    h_whole = whole.fit(x, steps=40, batch_size=16, progress=False)
    path = tmp_path / "run.zor"
    first = _net(weight_average=beta)
    first.fit(x, steps=17, batch_size=16, progress=False, checkpoint=path, checkpoint_every=5)
    second = _net(weight_average=beta)                         # a fresh process would build the same
    h = second.fit(x, steps=40, batch_size=16, progress=False, checkpoint=path, resume=True)
    assert h.start_step == 17 and h.steps == 40
    assert h.train_accuracy == h_whole.train_accuracy
    assert _max_diff(list(second.weights), list(whole.weights)) <= TOL
    for i in range(3):
        assert torch.equal(second.threshold(i), whole.threshold(i))
        assert torch.equal(second.rate(i), whole.rate(i))


def test_resume_from_a_different_configuration_names_what_differs(tmp_path):
    x = load_bundled("train")[0][:32]
    path = tmp_path / "run.zor"
    _net().fit(x, steps=3, batch_size=8, progress=False, checkpoint=path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.001, this run 0\.002"):
        _net(lr=2e-3).fit(x, steps=6, batch_size=8, progress=False, checkpoint=path, resume=True)
    with pytest.raises(CheckpointError, match="batch_size: checkpoint 8, this run 16"):
        _net().fit(x, steps=6, batch_size=16, progress=False, checkpoint=path, resume=True)
    with pytest.raises(CheckpointError, match="layer 1 size: checkpoint 24, this run 25"):
        Zor([Layer(784), Layer(25), Layer(784)], seed=0, device="cpu").fit(
            x, steps=6, batch_size=8, progress=False, checkpoint=path, resume=True)


def test_run_options_are_checked():
    x = load_bundled("train")[0][:16]
    with pytest.raises(ConfigError, match="need checkpoint=PATH"):
        _net().fit(x, steps=2, batch_size=8, progress=False, resume=True)
    with pytest.raises(ConfigError, match="checkpoint_every must be an int ≥ 0"):
        _net().fit(x, steps=2, batch_size=8, progress=False, checkpoint="m.zor", checkpoint_every=-1)


def test_resume_refuses_a_checkpoint_without_training_state(tmp_path):
    path = tmp_path / "plain.zor"
    _net().save(path)
    with pytest.raises(CheckpointError, match="holds no training state"):
        _net().fit(load_bundled("train")[0][:16], steps=2, batch_size=8, progress=False, checkpoint=path,
                   resume=True)


def _tampered(src: Path, dst: Path, meta_change=None, tensor_change=None) -> None:
    """A copy of checkpoint ``src`` with its training metadata or tensors changed."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if meta_change:
        training = json.loads(meta["training"])
        meta_change(training)
        meta["training"] = json.dumps(training)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(dst), metadata=meta)


@pytest.mark.parametrize("meta_change, tensor_change, message", [
    (lambda m: m.update(step=5), None, "expected train_accuracy to list 5 numbers"),
    (lambda m: m.update(step=-1), None, "expected step to be an int ≥ 0"),
    (lambda m: m["sampler"].update(rng={"bit_generator": "MT19937"}), None, "random state does not fit"),
    (lambda m: m.pop("sampler"), None, "expected a 'sampler' object"),
    (None, lambda t: t.update({"train.sampler_weight": -t["train.sampler_weight"]}), "must be ≥ 0"),
    (None, lambda t: t.update({"train.sampler_error": t["train.sampler_error"][:3]}), "train.sampler_error"),
    (None, lambda t: t.update({"train.sampler_block_sum": t["train.sampler_block_sum"].float()}), "float64"),
    (None, lambda t: t.pop("train.sampler_weight"), "missing tensor 'train.sampler_weight'"),
])
def test_a_tampered_training_state_is_a_checkpoint_error(tmp_path, meta_change, tensor_change, message):
    x = load_bundled("train")[0][:32]
    _net().fit(x, steps=3, batch_size=8, progress=False, checkpoint=tmp_path / "run.zor")
    _tampered(tmp_path / "run.zor", tmp_path / "bad.zor", meta_change, tensor_change)
    with pytest.raises(CheckpointError, match=message):
        _net().fit(x, steps=6, batch_size=8, progress=False, checkpoint=tmp_path / "bad.zor", resume=True)


def test_a_checkpoint_with_training_state_still_loads_as_a_network(tmp_path):
    x = load_bundled("train")[0][:16]
    net = _net()
    net.fit(x, steps=3, batch_size=8, progress=False, checkpoint=tmp_path / "run.zor")
    assert _max_diff(_weights(tmp_path / "run.zor"), list(net.weights)) == 0.0


def test_sync_every_reads_back_in_blocks_and_keeps_every_step(tmp_path):
    """sync_every = k lags the sampler by < k steps; every step's accuracy is still recorded, in order."""
    x = load_bundled("train")[0][:32]
    h1 = _net().fit(x, steps=12, batch_size=8, progress=False, sync_every=1)
    hk = _net().fit(x, steps=12, batch_size=8, progress=False, sync_every=5)
    assert len(hk.train_accuracy) == len(h1.train_accuracy) == 12
    assert hk.train_accuracy[0] == h1.train_accuracy[0]          # the first draw sees no errors in both
    with pytest.raises(ConfigError, match="sync_every must be a positive int"):
        _net().fit(x, steps=1, batch_size=8, progress=False, sync_every=0)


@pytest.mark.cuda
@cuda
def test_cuda_fit_matches_cpu_on_a_seeded_run():
    """Same seed, same draws (sync_every=1 on both): CPU and CUDA weights agree to float32 matmul accuracy."""
    x = load_bundled("train")[0][:64]
    nets = [Zor([Layer(784), Layer(64), Layer(784)], seed=0, device=d) for d in ("cpu", "cuda")]
    hists = [n.fit(x, steps=100, batch_size=32, progress=False, sync_every=1) for n in nets]
    assert abs(hists[0].train_accuracy[-1] - hists[1].train_accuracy[-1]) < 0.5     # percentage points
    assert _max_diff(list(nets[0].weights), [w.cpu() for w in nets[1].weights]) < 1e-2


@pytest.mark.cuda
@cuda
def test_cuda_fit_with_lagged_read_backs_trains():
    x = load_bundled("train")[0][:64]
    net = Zor([Layer(784), Layer(64), Layer(784)], seed=0, device="cuda")
    h = net.fit(x, steps=200, batch_size=32, progress=False)                    # sync_every = 25
    assert len(h.train_accuracy) == 200 and h.train_accuracy[-1] > h.train_accuracy[0]


def test_fit_records_every_step_end_and_zor_train_reports_the_steady_rate():
    """History.step_ends: one host-clock time per step, increasing, the last within the run's seconds; zor.train's
    summary reports B·steps / seconds (whole run) and B·(steps − 1) / (last end − first end) (steady)."""
    from zor.train import _summary

    net = Zor([Layer(16), Layer(8), Layer(16)], seed=0, device="cpu")
    x = torch.rand(32, 16, generator=torch.Generator().manual_seed(0))
    h = net.fit(x, steps=5, batch_size=8, progress=False)
    ends = h.step_ends
    assert len(ends) == 5 and 0 < ends[0] and all(a < b for a, b in zip(ends, ends[1:])) and ends[-1] <= h.seconds
    s = _summary(h, net, {"batch_size": 8, "checkpoint": None}, 1)
    assert s["samples_per_s"] == pytest.approx(5 * 8 / h.seconds, rel=1e-12)
    assert s["steady_samples_per_s"] == pytest.approx(4 * 8 / (ends[4] - ends[0]), rel=1e-12)
    one = net.fit(x, steps=1, batch_size=8, progress=False)
    assert len(one.step_ends) == 1 and _summary(one, net, {"batch_size": 8, "checkpoint": None}, 1)[
        "steady_samples_per_s"] is None                            # one step: no steady rate to report
