"""The GPU check: CUDA tests, CPU↔CUDA parity, export of a CUDA-trained model, throughput table.

Run by ``benchmarks/gpu_check.sh`` (which picks the Python and prints what it uses);
about 5 minutes on one GPU. On a machine where torch sees no GPU it says so and
exits 0 having measured nothing. Parts, each recorded in ``gpu_check.json`` in the
``--out`` folder (default ``$OUT``, else ``benchmarks/results/gpu_check``):

1. ``tests``: pytest on the tests marked ``cuda``;
2. ``parity``: one seeded run (784-64-784, batch 32, 200 steps, ``sync_every=1`` so
   both draw the same batches) on the CPU and on CUDA: max |ΔW| and the final training
   accuracies (float32 sums in another order: small differences, not bit equality);
3. ``export``: ``zor.train --device cuda`` → checkpoint → ``zor-export`` (which verifies
   the ONNX file against the engine on the CPU);
4. ``throughput`` (speeds as same-run ratios, medians of several runs): Zor training
   samples/s against an equal-size backprop MLP (forward, MSE, backward, fused AdamW)
   on CUDA at 4096-4096-4096, batch 1024 (target ≥ 0.75×); the GPU against one CPU
   thread at that size (target ≥ 20×); the README quick start's 500 steps on CUDA and
   on the CPU (target: CUDA no slower);
5. ``profile``: :mod:`benchmarks.step_profile` at 4096-wide on CUDA.

``--smoke`` runs parts 2-5 on the CPU at 256-wide (no GPU needed; tests/test_gpu_check.py), so a change
that breaks the check is found before a GPU is lent, not with its minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import click

from benchmarks import common, step_profile

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]
WIDE = [4096, 4096, 4096]


def _timed(fn: Callable[[], Any], sync: Callable[[], None], steps: int) -> Callable[[], float]:
    def run() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        return (time.perf_counter() - start) / steps
    return run


def _tests() -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
           "tests/test_distributed_fit.py", "tests/test_train_cli.py"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:]
    return {"passed": r.returncode == 0, "summary": tail, "command": " ".join(cmd[1:])}


def _parity(gpu: str = "cuda") -> dict[str, Any]:
    from zor import Layer, Zor
    from zor.tasks.datasets import load_bundled

    x = load_bundled("train")[0][:64]
    nets = [Zor([Layer(784), Layer(64), Layer(784)], seed=0, device=d) for d in ("cpu", gpu)]
    hists = [n.fit(x, steps=200, batch_size=32, progress=False, sync_every=1) for n in nets]
    diff = max(float((a - b.cpu()).abs().max()) for a, b in zip(nets[0].weights, nets[1].weights))
    return {"max_weight_diff": diff, "cpu_train_accuracy": hists[0].train_accuracy[-1],
            "cuda_train_accuracy": hists[1].train_accuracy[-1]}


def _export(folder: Path, gpu: str = "cuda") -> dict[str, Any]:
    ckpt, onnx = folder / "cuda.zor", folder / "cuda.onnx"
    train = subprocess.run([sys.executable, "-m", "zor.train", "--device", gpu, "--steps", "300", "--no-progress",
                            "--checkpoint", str(ckpt)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if train.returncode != 0:
        return {"passed": False, "step": "train", "error": train.stderr[-1500:]}
    export = subprocess.run([sys.executable, "-c", "import sys; from zor.export.cli import main; "
                             "sys.argv[0] = 'zor-export'; main()", str(ckpt), "-o", str(onnx)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    return {"passed": export.returncode == 0, "train": train.stdout.strip()[-400:],
            "export": (export.stdout + export.stderr).strip()[-800:]}


def _wide_steps(device: str, batch: int, sizes: Any = None) -> dict[str, Callable[[], None]]:
    import torch

    from zor import Layer, Zor

    sizes = sizes or WIDE
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(0)).to(device)
    net = Zor([Layer(n) for n in sizes], seed=0, device=device)
    fc1, fc2 = torch.nn.Linear(sizes[0], sizes[1]).to(device), torch.nn.Linear(sizes[1], sizes[2]).to(device)
    params = list(fc1.parameters()) + list(fc2.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=device.startswith("cuda"))

    def mlp() -> None:
        loss = torch.nn.functional.mse_loss(fc2(torch.relu(fc1(x))), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return {"zor": lambda: net._train_step(x, x), "mlp": mlp}


def _sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _throughput(batch: int, rounds: int, cpu_steps: int, gpu: str = "cuda", sizes: Any = None) -> dict[str, Any]:
    import torch

    steps = _wide_steps(gpu, batch, sizes)
    for fn in steps.values():
        fn()
    runs = common.interleave({k: _timed(fn, _sync(gpu), 20) for k, fn in steps.items()}, rounds)
    torch.set_num_threads(1)
    cpu = _wide_steps("cpu", batch, sizes)["zor"]
    cpu()
    cpu_s = [_timed(cpu, lambda: None, cpu_steps)() for _ in range(2)]
    out = {"zor_cuda_samples_per_s": batch / common.median(runs["zor"]),
           "mlp_cuda_samples_per_s": batch / common.median(runs["mlp"]),
           "zor_vs_mlp": common.paired_ratio(runs["mlp"], runs["zor"]),
           "zor_cpu_1thread_samples_per_s": batch / common.median(cpu_s)}
    out["cuda_vs_cpu_1thread"] = out["zor_cuda_samples_per_s"] / out["zor_cpu_1thread_samples_per_s"]
    out.update(_quickstart(rounds, gpu))
    return out


def _quickstart(rounds: int, gpu: str = "cuda") -> dict[str, Any]:
    """The README quick start's 500 train_batch steps (784-64-784, batch 48, ten images) per device."""
    import torch

    from zor import Layer, Zor
    from zor.tasks.datasets import few_shot, load_bundled

    x, y = load_bundled("train")
    x10 = torch.from_numpy(x[few_shot(y, 1)])

    def run(device: str) -> Callable[[], float]:
        def once() -> float:
            torch.manual_seed(0)
            net = Zor([Layer(784), Layer(64), Layer(784)], seed=0, device=device)
            xs = x10.to(device)
            sync = _sync(device)
            sync()
            start = time.perf_counter()
            for _ in range(500):
                batch = xs[torch.randint(0, 10, (48,), device=device)]
                net.train_batch(batch, batch)
            sync()
            return time.perf_counter() - start
        return once

    torch.set_num_threads(1)
    runs = common.interleave({"cpu": run("cpu"), "cuda": run(gpu)}, rounds)
    return {"quickstart_cpu_s": common.median(runs["cpu"]), "quickstart_cuda_s": common.median(runs["cuda"]),
            "quickstart_cuda_vs_cpu": common.paired_ratio(runs["cpu"], runs["cuda"])}


@common.command
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Folder for gpu_check.json (default: $OUT, else benchmarks/results/gpu_check).")
@click.option("--batch", type=click.IntRange(min=1), default=1024, help="Batch of the throughput table.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, help="Rounds of each timing (medians).")
@click.option("--cpu-steps", type=click.IntRange(min=1), default=2, help="Timed CPU steps at 4096-wide.")
@click.option("--smoke", is_flag=True,
              help="Run every part but the CUDA tests on the CPU at 256-wide, batch 64, one round: checks that this "
                   "script works before a GPU is lent (its figures mean nothing).")
def main(out, batch, rounds, cpu_steps, smoke):
    """CUDA tests, CPU↔CUDA parity, export of a CUDA-trained model, and the throughput table."""
    import torch

    if smoke:
        return _smoke(Path(out or os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu_check"))

    folder = Path(out or os.environ.get("OUT") or ROOT / "benchmarks" / "results" / "gpu_check")
    folder.mkdir(parents=True, exist_ok=True)
    env = common.environment(1)
    click.echo(f"python {sys.executable}; torch {torch.__version__} (CUDA build {torch.version.cuda}); "
               f"GPU: {env['cuda'] or 'none'}; CPU: {env['cpu']}")
    result: dict[str, Any] = {"benchmark": "gpu_check", "environment": env}
    if not torch.cuda.is_available():
        click.echo("no GPU: torch sees no CUDA device, so no CUDA check ran and no CUDA figure was measured")
        result["gpu"] = None
        common.write_json(folder / "gpu_check.json", result)
        click.echo(f"wrote {folder / 'gpu_check.json'}")
        return
    result["gpu"] = env["cuda"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in (("tests", _tests), ("parity", _parity), ("export", lambda: _export(Path(tmp))),
                           ("throughput", lambda: _throughput(batch, rounds, cpu_steps)),
                           ("profile", lambda: step_profile.profile("cuda", WIDE, batch, 5, 3))):
            click.echo(f"-- {name}")
            start = time.perf_counter()
            try:
                result[name] = part()
            except Exception as exc:   # one failed part must not hide the others' figures
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            result[name]["seconds"] = time.perf_counter() - start
            click.echo(f"   {result[name]}")
            common.write_json(folder / "gpu_check.json", result)
    t = result.get("throughput", {})
    if "zor_vs_mlp" in t:
        rows = [{"figure": "Zor / MLP training samples/s, CUDA, 4096-wide, batch %d" % batch,
                 "value": t["zor_vs_mlp"], "target": "≥ 0.75"},
                {"figure": "CUDA / one CPU thread, Zor training", "value": t["cuda_vs_cpu_1thread"],
                 "target": "≥ 20"},
                {"figure": "quick start 500 steps: CPU time / CUDA time", "value": t["quickstart_cuda_vs_cpu"],
                 "target": "≥ 1"}]
        click.echo(common.format_table(rows, ["figure", "value", "target"], digits=2))
    click.echo(f"wrote {folder / 'gpu_check.json'}")


def _smoke(folder: Path) -> None:
    """Every part but the CUDA tests, with the CPU standing in for the GPU at small sizes; writes
    gpu_check_smoke.json and exits 1 when a part failed (so a broken check is found without a GPU)."""
    folder.mkdir(parents=True, exist_ok=True)
    small = [256, 256, 256]
    result: dict[str, Any] = {"benchmark": "gpu_check --smoke", "environment": common.environment(1), "gpu": None}
    with tempfile.TemporaryDirectory() as tmp:
        for name, part in (("parity", lambda: _parity("cpu")), ("export", lambda: _export(Path(tmp), "cpu")),
                           ("throughput", lambda: _throughput(64, 1, 1, "cpu", small)),
                           ("profile", lambda: step_profile.profile("cpu", small, 64, 2, 1))):
            try:
                result[name] = part()
            except Exception as exc:
                result[name] = {"error": f"{type(exc).__name__}: {exc}"}
            click.echo(f"-- {name}: {result[name]}")
    common.write_json(folder / "gpu_check_smoke.json", result)
    failed = [n for n in ("parity", "export", "throughput", "profile")
              if "error" in result[n] or result[n].get("passed") is False]
    if failed:
        raise click.ClickException(f"gpu_check --smoke: these parts failed on the CPU: {failed}")
    click.echo(f"every part ran on the CPU; wrote {folder / 'gpu_check_smoke.json'}")


if __name__ == "__main__":
    main()
