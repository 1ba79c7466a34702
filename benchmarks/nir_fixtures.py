"""Writes tests/fixtures/nir/: small networks built and trained in snnTorch, exported with snnTorch's own NIR exporter.

This script is the way to regenerate the fixtures (``python -m benchmarks.nir_fixtures``). It needs the
``frameworks`` extra (snntorch, nir). For each network it writes

- ``NAME.nir``: the graph written by ``snntorch.export_nir.export_to_nir`` (nothing edited by us);
- ``NAME.npz``: ``inputs`` (T, B, *input_shape) rate-coded Fashion-MNIST spikes (uint8), ``labels`` (B,),
  and snnTorch's own eager forward pass over the T steps: ``spikes_<k>`` (T, B, n_k) of every spiking layer in
  order, ``output_mem`` (T, B, 10) the output layer's membrane, ``counts`` (B, 10) the output spike counts.

The three networks (reset_mechanism="zero" throughout, see docs/nir-frameworks.md for why):

    ff_lif:    196 → Linear 32 → Leaky → Linear 10 → Leaky                       v ← β v (1 − s) + W x
    rsyn_cuba: 196 → Linear 24 → RSynaptic(24, all-to-all) → Linear 10 → Leaky   i ← α i + W x + V s_prev
                                                                                  v ← β v (1 − s) + i
    conv_lif:  1×14×14 → Conv2d(1→4, 3×3, stride 2) → Leaky (4×6×6) → Flatten → Linear 10 → Leaky

snnTorch exports these at its fixed dt = 1e-4 as τ = dt / (1 − β), r = τ / dt (and for Synaptic τ_syn =
dt / (1 − α), w_in = τ_syn / dt), so forward Euler with dt = 1e-4 gives back v ← β v + r·(dt/τ)·x = β v + x.

The working export path (snnTorch 1.0.0, nir 1.0.8, nirtorch 2.0.2): β and the threshold given as
per-unit vectors (scalars export 0-d LIF parameters whose type inference fails), ``ignore_dims=[0]`` (the
batch dimension of the sample), and networks as ``torch.nn.Sequential`` with ``init_hidden=True``.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import click
import numpy as np

from benchmarks.common import command, load_images, seed_everything, set_threads

T_TRAIN = 25        # steps per sample while training (BPTT)
T_FIXTURE = 100     # steps stored in each fixture
SIDE = 14           # images are 2×2-average-pooled from 28×28 to 14×14


def pooled(x: np.ndarray) -> np.ndarray:
    """(N, 784) in [0, 1] → (N, 196): 2×2 average pooling."""
    return x.reshape(-1, SIDE, 2, SIDE, 2).mean(axis=(2, 4)).reshape(-1, SIDE * SIDE).astype(np.float32)


def rate_code(x: np.ndarray, steps: int, rng: np.random.Generator) -> np.ndarray:
    """(N, F) intensities → (steps, N, F) uint8 Bernoulli spikes, P(spike) = intensity."""
    return (rng.random((steps,) + x.shape) < x[None]).astype(np.uint8)


def _leaky(n, beta: float = 0.9, **kw):
    import snntorch as snn
    import torch

    shape = (n,) if isinstance(n, int) else tuple(n)
    return snn.Leaky(beta=torch.full(shape, beta), threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", **kw)


def build(name: str):
    """(network, input_shape) for one of the three fixture networks."""
    import snntorch as snn
    import torch
    from torch import nn

    if name == "ff_lif":
        return nn.Sequential(nn.Linear(196, 32), _leaky(32), nn.Linear(32, 10), _leaky(10, output=True)), (196,)
    if name == "rsyn_cuba":
        rsyn = snn.RSynaptic(alpha=torch.full((24,), 0.8), beta=torch.full((24,), 0.9), threshold=torch.ones(24),
                             linear_features=24, init_hidden=True, reset_mechanism="zero")
        return nn.Sequential(nn.Linear(196, 24), rsyn, nn.Linear(24, 10), _leaky(10, output=True)), (196,)
    if name == "conv_lif":
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), _leaky((4, 6, 6)), nn.Flatten(),
                             nn.Linear(144, 10), _leaky(10, output=True)), (1, SIDE, SIDE)
    if name == "norse_ff_lif":
        import norse.torch as norse

        def params(n: int):                             # per-unit vectors: scalars export 0-d nodes (type error)
            return norse.LIFBoxParameters(tau_mem_inv=torch.full((n,), 100.0), v_th=torch.ones(n),
                                          v_leak=torch.zeros(n), v_reset=torch.zeros(n))
        return norse.SequentialState(nn.Linear(196, 32), norse.LIFBoxCell(params(32)), nn.Linear(32, 10),
                                     norse.LIFBoxCell(params(10))), (196,)
    if name == "sinabs_conv_if":
        import sinabs.layers as sl
        from sinabs.activation import MembraneReset, SingleSpike

        def iaf():                                      # one spike per step, reset to 0: what NIR's IF states
            return sl.IAFSqueeze(num_timesteps=1, spike_fn=SingleSpike, reset_fn=MembraneReset())
        return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), iaf(), nn.Flatten(), nn.Linear(144, 10), iaf()), \
            (1, SIDE, SIDE)
    raise ValueError(f"unknown fixture network {name!r}; known: {', '.join(NAMES)}")


NAMES = ("ff_lif", "rsyn_cuba", "conv_lif", "norse_ff_lif", "sinabs_conv_if")


def export(name: str, net, shape):
    """The framework's own NIR exporter on net, with the arguments that work (see the module docstring)."""
    import torch

    if name.startswith("sinabs_"):
        import sinabs

        _sinabs_steps(net, 1)
        return sinabs.to_nir(net, torch.zeros(1, *shape))
    if name.startswith("norse_"):
        import norse.torch as norse

        return norse.to_nir(net, torch.zeros(*shape))   # an unbatched sample: a batched one fails type inference
    from snntorch.export_nir import export_to_nir

    return export_to_nir(net, torch.zeros(1, *shape), ignore_dims=[0])


def _sinabs_steps(net, steps: int) -> None:
    """Sinabs' squeezed layers take (B·T, ...) batch-major: tell them T, and start from rest."""
    for m in net:
        if hasattr(m, "num_timesteps"):
            m.num_timesteps = steps
            m.reset_states()


def _forward(net, xs):
    """Per-step outputs (spikes, membrane or None) of a snnTorch (init_hidden), Norse (state passing) or sinabs
    (whole sequence in one call) net on xs (T, B, *shape)."""
    if any(hasattr(m, "num_timesteps") for m in net):
        steps, batch = xs.shape[:2]
        _sinabs_steps(net, steps)
        z = net(xs.transpose(0, 1).reshape(batch * steps, *xs.shape[2:]))       # (B·T, 10)
        return [(zt, None) for zt in z.reshape(batch, steps, -1).transpose(0, 1)]
    if type(net).__name__ == "SequentialState":
        state, outs = None, []
        for x in xs:
            z, state = net(x, state)
            outs.append((z, None))
        return outs
    reset(net)
    return [net(x) for x in xs]


def reset(net) -> None:
    """Zero every layer's hidden state with fresh tensors (cut from any earlier autograd graph)."""
    for m in net:
        if hasattr(m, "reset_mem"):
            m.reset_mem()


def run(net, xs) -> dict[str, np.ndarray]:
    """snnTorch's eager forward over xs (T, B, *shape): every spiking layer's spikes and the output membrane."""
    import snntorch as snn
    import torch
    spiking = [m for m in net if isinstance(m, (snn.Leaky, snn.RSynaptic, snn.Synaptic))
               or type(m).__name__ in ("LIFBoxCell", "IAFSqueeze")]
    seen: dict[int, list] = {i: [] for i in range(len(spiking))}
    hooks = [m.register_forward_hook(lambda _m, _i, out, i=i: seen[i].append(
        (out[0] if isinstance(out, tuple) else out).detach().clone())) for i, m in enumerate(spiking)]
    with torch.no_grad():
        mems = [mem for _, mem in _forward(net, xs)]   # xs: (T, B, *shape)
    for h in hooks:
        h.remove()
    steps, batch = xs.shape[:2]
    out = {}
    for i, v in seen.items():          # one (B·T, ...) call for sinabs, else T calls of (B, ...)
        spikes = v[0].reshape(batch, steps, -1).transpose(0, 1) if len(v) == 1 else torch.stack(v).flatten(2)
        out[f"spikes_{i}"] = spikes.numpy().astype(np.uint8)                 # (T, B, n)
    if mems[0] is not None:
        out["output_mem"] = torch.stack(mems).numpy().astype(np.float32)   # (T, B, 10)
    out["counts"] = out[f"spikes_{len(spiking) - 1}"].sum(0).astype(np.int32)   # (B, 10)
    return out


def train(net, shape, x: np.ndarray, y: np.ndarray, steps: int, seed: int) -> float:
    """`steps` BPTT steps on rate-coded batches of 64; loss = cross-entropy of the output spike counts.

    Returns the seconds it took. A fixed step count (not a time budget) keeps the fixtures reproducible.
    """
    import torch
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    start = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(x), 64)
        xs = torch.from_numpy(rate_code(x[idx], T_TRAIN, rng).astype(np.float32)).reshape(T_TRAIN, 64, *shape)
        counts = sum(z for z, _ in _forward(net, xs))   # (64, 10)
        loss = torch.nn.functional.cross_entropy(counts, torch.from_numpy(y[idx]).long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


def write_fixture(name: str, folder: Path, data: dict, steps: int, batch: int, seed: int) -> dict:
    """Build, train, export through snnTorch's NIR exporter and record one fixture; returns a summary row."""
    import nir
    import torch

    from zor.common.fileio import atomic_path, write_bytes_atomic

    seed_everything(seed)
    net, shape = build(name)
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    seconds = train(net, shape, pooled(xtr[:4000]), ytr[:4000], steps, seed)
    rng = np.random.default_rng(seed + 1)
    xs = rate_code(pooled(xte[:batch]), T_FIXTURE, rng).reshape(T_FIXTURE, batch, *shape)
    ref = run(net, torch.from_numpy(xs.astype(np.float32)))
    graph = export(name, net, shape)
    with atomic_path(folder / f"{name}.nir") as tmp:
        nir.write(str(tmp), graph)
    buf = io.BytesIO()
    np.savez_compressed(buf, inputs=xs, labels=yte[:batch].astype(np.int64), **ref)
    write_bytes_atomic(folder / f"{name}.npz", buf.getvalue())
    acc = float((ref["counts"].argmax(1) == yte[:batch]).mean())
    rates = [float(ref[k].mean()) for k in sorted(ref) if k.startswith("spikes_")]
    return {"name": name, "train_steps": steps, "train_seconds": round(seconds, 1), "fixture_accuracy": acc,
            "spike_rates": [round(r, 4) for r in rates]}


@command
@click.option("--out", default="tests/fixtures/nir", help="folder the fixtures are written to")
@click.option("--steps", default=300, help="training steps per network (BPTT, batches of 64, one thread)")
@click.option("--only", default=",".join(NAMES), help="comma-separated networks to (re)write")
@click.option("--batch", default=16, help="test samples stored per fixture")
@click.option("--seed", default=0)
def main(out: str, steps: int, only: str, batch: int, seed: int) -> None:
    """Regenerate the snnTorch NIR fixtures (see the module docstring)."""
    set_threads(1)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    data = load_images()
    for name in only.split(","):
        if name not in NAMES:
            raise click.BadParameter(f"unknown network {name!r}; known: {', '.join(NAMES)}", param_hint="--only")
        print(write_fixture(name, folder, data, steps, batch, seed))


if __name__ == "__main__":
    main()
