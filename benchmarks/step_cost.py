"""What one Zor training step costs next to one backprop MLP step of the same size.

For each layer list (default 784-64-784, 784-256-10, 784-4096-784) at batch B (48) on
``--threads`` CPU threads (1), two steps are timed side by side:

- Zor: ``net.train_batch(x, y)`` (forward, error, the learning rule, AdamW, homeostasis);
- MLP: the equal-size network (Linear, ReLU between, no activation at the top), MSE
  loss, autograd backward, fused AdamW: ``opt.zero_grad(); loss.backward(); opt.step()``,
  the optimizer step with denormals flushed to zero as in the Zor step
  (``zor_over_mlp_unflushed``: against the same MLP without the flush, which on this
  fixed batch slows down 2× after ~1,000 steps).

Both first take ``--warmup`` steps (4096-wide: a fifth), so the figures are of the
steady state a training run spends its time in (without the warm-up the step's Adam
moments had not yet decayed into the denormal range, which once made the Zor step
1.8× slower after ~700 steps: docs/notes/step-cost.md). Each figure is the time of
``--steps`` consecutive steps, wall clock and the thread's CPU time (on one thread the
CPU time leaves out the time the thread waited for a core on a busy machine); the two
are interleaved for ``--rounds`` rounds (common.interleave) and the ratio Zor / MLP is
the median of the per-round ratios (common.paired_ratio), so load from other processes
falls on both. ``spike_rate`` is the hidden layers' mean firing rate r after the
warm-up: the density of the post side of the co-activity product.

The phase table splits the Zor step into forward (the gated pass), rates (firing-rate
EMA), signal (δ̂ and δ̂ Wᵀ), direction (E, G and U = G ⊙ E′; the masked co-activity where
it applies), clip (norm clip and error scale of each U) and optimiser (each W_i's fused
AdamW step and weight clamp, homeostasis), timed by running the same step in pieces
(zor.engine.learning's own functions; the default network's path, a fused optimizer), as
shares of their sum.

``--busy`` also times the README quick start (500 steps of 784-64-784 at batch 48, the
engine choosing its threads) with a busy-loop process running beside it, against the
same 500 steps with torch's default thread count forced.

Usage (from the repository root):
    python -m benchmarks.step_cost --json step-cost.json
    python -m benchmarks.step_cost --sizes 784-64-784 --rounds 3 --steps 20 --warmup 50 --no-busy   # quick
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any, Callable

import click

from benchmarks import common

__all__ = ["main", "zor_step", "mlp_step", "phases", "quick_start"]

PHASES = ("forward", "rates", "signal", "direction", "clip", "optimiser")


def zor_step(sizes: list[int], batch: int) -> Callable[[], Any]:
    import torch

    from zor import Layer, Zor

    net = Zor([Layer(n) for n in sizes], seed=0, device="cpu")
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(0))
    y = x if sizes[-1] == sizes[0] else torch.rand(batch, sizes[-1])
    step = lambda: net.train_batch(x, y)  # noqa: E731
    step.net = net                                              # type: ignore[attr-defined]
    return step


def mlp_step(sizes: list[int], batch: int, flush: bool = True) -> Callable[[], Any]:
    """The reference step; with ``flush`` its optimizer step runs with denormals flushed to zero, as the Zor
    step's does (without it both slow down alike once Adam moments decay into the denormal range)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        mods += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
    model = nn.Sequential(*mods)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.rand(batch, sizes[0])
    y = x if sizes[-1] == sizes[0] else torch.rand(batch, sizes[-1])

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        if flush:
            torch.set_flush_denormal(True)
        opt.step()
        if flush:
            torch.set_flush_denormal(False)
    return step


def _repeat(fn: Callable[[], Any], n: int) -> Callable[[], tuple[float, float]]:
    """(wall seconds, thread CPU seconds) per call of ``fn``, over n calls."""
    def run() -> tuple[float, float]:
        t, c = time.perf_counter(), time.thread_time()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t) / n, (time.thread_time() - c) / n
    return run


def phases(sizes: list[int], batch: int, steps: int, warmup: int = 0) -> dict[str, float]:
    """Seconds per step of each phase of the Zor step, the step run in pieces ``steps`` times (after
    ``warmup`` whole steps)."""
    import torch

    from zor import Layer, Zor
    from zor.engine import learning, rules

    net = Zor([Layer(n) for n in sizes], seed=0, device="cpu")
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(0))
    y = x if sizes[-1] == sizes[0] else torch.rand(batch, sizes[-1])
    for _ in range(max(1, warmup)):                          # at least one: the optimizer's state exists
        net.train_batch(x, y)
    spent = dict.fromkeys(PHASES, 0.0)

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.perf_counter()
        out = fn()
        spent[name] += time.perf_counter() - t
        return out

    with torch.no_grad():
        for k in range(steps + 1):
            if k == 1:
                spent = dict.fromkeys(PHASES, 0.0)            # the first run warms up
            out, traces = timed("forward", lambda: net._forward(x))
            timed("rates", lambda: learning.update_rates(net, traces))
            delta = y - out
            scale = delta.abs().mean().clamp_min_(net.config.min_error_scale).neg_()
            weights, top = list(net.weights), len(net.weights) - 1
            fused = learning._fused_plan(net.optimizer, weights)
            torch._foreach_add_(fused[2][2], 1)
            for i in reversed(range(len(weights))):
                w, layer, conn = weights[i], net.layers[i], net.connections[i]
                d = timed("signal", lambda: net.rule.signal(delta, traces[i + 1], i == top))
                if i > 0:
                    delta = timed("signal", lambda: conn.backward(d, w))
                u = timed("direction", lambda: _direction(net, i, w, traces[i], traces[i + 1], d))
                timed("clip", lambda: rules.clip_norm(u, layer.max_update_norm, scale))
                timed("optimiser", lambda: learning._adam_step(fused, i, w, u, layer.max_weight))
            timed("optimiser", lambda: learning._homeostasis(net))
    return {k: v / steps for k, v in spent.items()}


def _direction(net: Any, i: int, w: Any, pre: Any, post: Any, d: Any) -> Any:
    """U_i = G ⊙ E′ of a default network's connection i (no novelty gating) as zor.engine.learning forms it, not
    yet clipped: the masked co-activity's columns where it applies (scattered), else Rule.direction."""
    from zor.engine import buffers, learning

    buf = buffers.flat(net, "grad", w.shape, w)
    work, active = buffers.flat(net, "work", w.shape, w), learning._active_columns(net, i, post)
    if active is None:
        return net.rule.direction(pre, post, d, net.connections[i], buf, work)
    cols, k = active[0], active[0].shape[0]
    buf = buffers.masked(net, i, w, active[1])
    if k:
        u = net.rule.direction_columns(pre, post, d, net.connections[i], cols, work.view(-1)[:2 * w.shape[0] * k])
        buf.scatter_(1, cols.expand(w.shape[0], k), u)
    return buf


def _busy_loop(stop: Any) -> None:
    while not stop.is_set():
        pass


def quick_start(threads_default: int) -> dict[str, float]:
    """Seconds for the README quick start's 500 steps with a busy process beside it: the engine's own thread
    choice, then torch's default count (``threads_default``) forced through Zor(threads=...)."""
    import torch

    from zor import Layer, Zor

    x10 = torch.rand(10, 784, generator=torch.Generator().manual_seed(0))
    stop = multiprocessing.Event()
    busy = multiprocessing.Process(target=_busy_loop, args=(stop,), daemon=True)
    busy.start()
    try:
        out = {}
        for name, threads in (("engine_choice", None), ("torch_default", threads_default)):
            torch.manual_seed(0)
            net = Zor([Layer(784), Layer(64), Layer(784)], seed=0, device="cpu", threads=threads)
            t = time.perf_counter()
            for _ in range(500):
                batch = x10[torch.randint(0, 10, (48,))]
                net.train_batch(batch, batch)
            out[name] = time.perf_counter() - t
        return out
    finally:
        stop.set()
        busy.join(5)


@common.command
@click.option("--sizes", default="784-64-784,784-256-10,784-4096-784", help="layer lists, comma-separated")
@click.option("--batch", default=48, help="batch size B")
@click.option("--threads", default=1, help="torch threads for the paired table")
@click.option("--rounds", default=7, help="interleaved rounds (medians over them)")
@click.option("--steps", default=50, help="steps per timed figure (4096-wide: a fifth)")
@click.option("--warmup", default=1000, help="steps each network takes before it is timed (4096-wide: a fifth)")
@click.option("--phases/--no-phases", "with_phases", default=True, help="also time the step's phases")
@click.option("--busy/--no-busy", default=True, help="also time the quick start beside a busy process")
@click.option("--json", "json_path", default=None, help="write the results here")
def main(sizes: str, batch: int, threads: int, rounds: int, steps: int, warmup: int, with_phases: bool, busy: bool,
         json_path: str) -> None:
    """Zor step vs equal-size AdamW MSE MLP step: paired ratios, the phase split, the busy quick start."""
    import torch

    import zor.engine.threads  # noqa: F401  (it notes torch's default thread count at import: before set_threads)

    common.check_json_folder(json_path)
    default_threads = torch.get_num_threads()
    rows, split = [], []
    for text in sizes.split(","):
        layer_sizes = [int(v) for v in text.split("-")]
        wide = max(layer_sizes) >= 2048
        n, warm = (max(2, steps // 5), warmup // 5) if wide else (steps, warmup)
        common.set_threads(threads)
        zor, mlp, plain = zor_step(layer_sizes, batch), mlp_step(layer_sizes, batch), mlp_step(layer_sizes, batch, False)
        for _ in range(max(1, warm)):                          # warm-up: the steady state of a run
            zor(), mlp(), plain()
        got = common.interleave({"zor": _repeat(zor, n), "mlp": _repeat(mlp, n), "plain": _repeat(plain, n)}, rounds)
        wall = {k: [w for w, _ in v] for k, v in got.items()}
        cpu = {k: [c for _, c in v] for k, v in got.items()}
        net = zor.net                                          # type: ignore[attr-defined]
        hidden = [float(net.rate(i).mean()) for i in range(1, len(layer_sizes) - 1)]
        rows.append({"sizes": text, "batch": batch, "threads": threads,
                     "zor_ms": common.median(wall["zor"]) * 1e3, "mlp_ms": common.median(wall["mlp"]) * 1e3,
                     "zor_over_mlp": common.paired_ratio(wall["mlp"], wall["zor"]) ** -1,
                     "zor_over_mlp_cpu": common.paired_ratio(cpu["mlp"], cpu["zor"]) ** -1,
                     "zor_over_mlp_unflushed": common.paired_ratio(wall["plain"], wall["zor"]) ** -1,
                     "spike_rate": sum(hidden) / len(hidden) if hidden else None,
                     "rounds": rounds, "steps_per_figure": n, "warmup": warm})
        if with_phases:
            ph = phases(layer_sizes, batch, n, warm)
            total = sum(ph.values())
            split.append({"sizes": text, **{k: 100 * v / total for k, v in ph.items()}, "sum_ms": total * 1e3})
    print(common.format_table(rows, ["sizes", "batch", "threads", "zor_ms", "mlp_ms", "zor_over_mlp",
                                     "zor_over_mlp_cpu", "zor_over_mlp_unflushed", "spike_rate"],
                              digits={"zor_ms": 3, "mlp_ms": 3, "zor_over_mlp": 2, "zor_over_mlp_cpu": 2,
                                      "zor_over_mlp_unflushed": 2, "spike_rate": 2}))
    if split:
        print("\nphase shares of the Zor step (%):")
        print(common.format_table(split, ["sizes", *PHASES, "sum_ms"], digits=1))
    result: dict[str, Any] = {"paired": rows, "phases": split, "environment": common.environment(threads)}
    if busy:
        os.environ.pop("OMP_NUM_THREADS", None)                # set by common.set_threads; the quick start sets none
        torch.set_num_threads(default_threads)
        qs = quick_start(default_threads)
        qs["ratio_default_over_choice"] = qs["torch_default"] / qs["engine_choice"]
        print(f"\nquick start, 500 steps beside a busy process: engine's thread choice {qs['engine_choice']:.2f} s, "
              f"torch's default {default_threads} threads {qs['torch_default']:.2f} s")
        result["quick_start_busy"] = qs
    if json_path:
        common.write_json(json_path, result)


if __name__ == "__main__":
    main()
