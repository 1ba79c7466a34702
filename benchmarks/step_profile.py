"""Where the time of a Zor training step goes, per device: forward, signal, co-activity, update,
optimiser, homeostasis.

One step of ``train_batch(x, x)`` on an L-layer dense network, taken apart in the
order :mod:`zor.engine.learning` runs it (connection i from the top down):

    forward       c, s, a of every layer and the firing-rate EMAs    (net._forward_train)
    signal        δ̂ = rule.signal(δ);  δ ← δ̂ W_iᵀ                   one (B, n_{i+1}) × (n_{i+1}, n_i) product
    co-activity   E, G = rule.correlate(pre, post, δ̂)                 the outer products O(a_i, ·)
    update        E′ = clip(E − νR, 0, 1);  U = G ⊙ E′, norm-clipped, error-scaled; grad = −U
    optimiser     the optimizer step (the engine's fused AdamW path where it has one), weight clamp
    homeostasis   θ ← θ − η (target − r) on every layer

Each phase is timed with the device synchronised at its ends (on CUDA this removes the
overlap of queued kernels, so the phases add up to a little more than a real step);
the real step, ``net._train_step``, is timed beside them in the same rounds. Figures
are medians over ``--rounds`` rounds of ``--steps`` steps, as shares of the summed
phases and as milliseconds.

Usage (from the repository root):
    python -m benchmarks.step_profile --json step_profile.json
    python -m benchmarks.step_profile --layers 4096,4096,4096 --batch 1024 --steps 2
"""

from __future__ import annotations

import time
from typing import Any, Callable

import click

from benchmarks import common

__all__ = ["main", "profile", "PHASES"]

PHASES = ("forward", "signal", "coactivity", "update", "optimiser", "homeostasis")


def _phased_step(net: Any, x: Any, clock: Callable[[str], None]) -> None:
    """One training step of ``net`` on (x, x), calling ``clock(phase)`` at the end of each phase."""
    from zor.engine import learning, rules
    from zor.engine.learning import always_spikes

    out, traces = net._forward_train(x)
    delta = x - out
    clock("forward")
    cfg = net.config
    scale = max(float(delta.abs().mean()), cfg.min_error_scale) if cfg.error_scaling else 1.0
    top = len(net.weights) - 1
    for i in reversed(range(len(net.weights))):
        w, conn, layer = net.weights[i], net.connections[i], net.layers[i]
        d = net.rule.signal(delta, traces[i + 1], i == top)
        if i > 0:
            delta = conn.backward(d, w)
        clock("signal")
        post = traces[i + 1]
        if always_spikes(net, i + 1):
            post = rules.Trace(c=post.c, s=post.s, a=post.a, always=True)
        e, g = net.rule.correlate(traces[i], post, d, conn)
        clock("coactivity")
        if layer.novelty_factor != 0.0:
            e, r = rules.novelty(e, net.novelty_trace(i), layer.novelty_factor, layer.novelty_momentum)
            net.novelty_trace(i).copy_(r)
        else:
            e = e.clamp_(0.0, 1.0)
        w.grad = rules.clip_norm(g * e, layer.max_update_norm, -scale)
        clock("update")
    fused = getattr(learning, "_fused_adam_step", None)       # the engine's own fast path, when it has one
    if fused is None or not fused(net.optimizer):
        net.optimizer.step()
        net.optimizer.zero_grad(set_to_none=True)
    for layer, w in zip(net.layers, net.weights):
        if layer.max_weight is not None:
            w.clamp_(-layer.max_weight, layer.max_weight)
    clock("optimiser")
    for i, layer in enumerate(net.layers):
        rules.homeostasis(net.threshold(i), net.rate(i), layer.target_activation, net._eta[i], layer.threshold_range)
    clock("homeostasis")


def profile(device: str, sizes: list[int], batch: int, steps: int, rounds: int) -> dict[str, Any]:
    """Median seconds per step of each phase, and of the real step, on ``device``."""
    import torch

    from zor import Layer, Zor

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    net = Zor([Layer(n) for n in sizes], seed=0, device=device)
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(0)).to(device)
    if sizes[-1] != sizes[0]:
        raise click.UsageError(f"--layers: the profile trains an autoencoder, so the last size must be {sizes[0]}")
    net._train_step(x, x)                                   # warm-up (allocations, kernels)
    sync()

    def phased() -> dict[str, float]:
        spent = dict.fromkeys(PHASES, 0.0)
        with torch.no_grad():
            for _ in range(steps):
                sync()
                mark = [time.perf_counter()]

                def clock(phase: str) -> None:
                    sync()
                    now = time.perf_counter()
                    spent[phase] += now - mark[0]
                    mark[0] = now
                _phased_step(net, x, clock)
        return {k: v / steps for k, v in spent.items()}

    def real() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            net._train_step(x, x)
        sync()
        return (time.perf_counter() - start) / steps

    runs = common.interleave({"phased": phased, "real": real}, rounds)
    row: dict[str, Any] = {"device": device, "layers": "-".join(map(str, sizes)), "batch": batch}
    for phase in PHASES:
        row[f"{phase}_ms"] = 1000 * common.median([r[phase] for r in runs["phased"]])
    total = sum(row[f"{p}_ms"] for p in PHASES)
    for phase in PHASES:
        row[f"{phase}_share"] = row[f"{phase}_ms"] / total if total > 0 else float("nan")
    row["phases_ms"] = total
    row["step_ms"] = 1000 * common.median(runs["real"])
    return row


@common.command
@click.option("--layers", default="784,1024,784", help="Layer sizes (an autoencoder: first = last).")
@click.option("--batch", type=click.IntRange(min=1), default=256, help="Batch size.")
@click.option("--steps", type=click.IntRange(min=1), default=10, help="Steps per round.")
@click.option("--rounds", type=click.IntRange(min=1), default=5, help="Rounds (medians are over these).")
@click.option("--devices", default="auto", help="auto (CPU, and CUDA when present), cpu, cuda, or cpu,cuda.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, help="torch CPU threads.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON here.")
def main(layers, batch, steps, rounds, devices, threads, json_path):
    """Time each phase of a Zor training step on each available device."""
    import torch

    common.check_json_folder(json_path)
    common.set_threads(threads)
    sizes = common.parse_int_list(layers, "--layers")
    names = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])) if devices == "auto" else devices.split(",")
    for name in names:
        if name not in ("cpu", "cuda"):
            raise click.UsageError(f"--devices: expected auto, cpu, cuda or cpu,cuda, got {devices!r}")
        if name == "cuda" and not torch.cuda.is_available():
            raise click.UsageError("--devices cuda: torch sees no CUDA GPU on this machine")
    rows = [profile(d, sizes, batch, steps, rounds) for d in names]
    env = common.environment(threads)
    click.echo(f"{env['cpu']}, {threads} CPU thread(s); CUDA: {env['cuda'] or 'not available'}; torch {env['torch']}; "
               f"load {env['load_average']}; median of {rounds} rounds of {steps} steps")
    click.echo(f"\nWhere a Zor step goes ({'-'.join(map(str, sizes))}, batch {batch}), ms per step:")
    cols = ["device"] + [f"{p}_ms" for p in PHASES] + ["phases_ms", "step_ms"]
    click.echo(common.format_table(rows, cols, ["device", *PHASES, "sum", "real step"], digits=3))
    click.echo("\nShares of the summed phases:")
    click.echo(common.format_table(rows, ["device"] + [f"{p}_share" for p in PHASES], ["device", *PHASES]))
    if json_path:
        common.write_json(json_path, {"benchmark": "step_profile", "config": {"layers": sizes, "batch": batch,
                                      "steps": steps, "rounds": rounds}, "environment": env, "rows": rows})
        click.echo(f"wrote {json_path}")


if __name__ == "__main__":
    main()
