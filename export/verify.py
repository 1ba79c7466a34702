"""Verification: the torch engine and onnxruntime, side by side, on the same inputs.

For every step t and layer i both sides give the charges c_i and spikes s_i; the
report holds, per layer, the spike agreement and the max/mean charge error, and
per float output (``output`` and each ``state_out_i``) the max/mean absolute
difference. Stateful models run T steps from rest (zeros) and again from a random
state. Checks go as in optimum's exporter validation: I/O names first, then
shapes, then values with explicit tolerances; every failure is collected and
:class:`~zor.common.errors.VerificationError` carries the full report.

Tolerances (float32):

    output        |o_onnx − o_torch| ≤ atol·max(1, |o_torch|)   (atol = 1e-5: absolute for
                                                                  outputs within ±1 such as images,
                                                                  relative for large ones such as
                                                                  logits, whose float32 rounding
                                                                  grows with their size)
    state_out_i   |Δ| ≤ atol + rtol·|c_torch|                   (rtol = 1e-5: charges may be large)
    spikes        100 % agreement, except exact ties

A *tie* is a spike that differs where |c − θ| ≤ tie_tol·max(1, |θ|): the two sides
round the same sum in a different order, and a charge that close to the threshold may
fall either way. Ties are counted apart, not as failures, and a row that diverged at
a tie is left out of the comparisons downstream of it (later layers, later steps).

Example:
    >>> from zor import Zor, Layer
    >>> from zor.export.graph import to_onnx
    >>> m = Zor([Layer(4), Layer(3), Layer(2)], seed=0)
    >>> verify(m, to_onnx(m), batch=4)["passed"]
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import numpy as np
import onnx
import torch

from zor.common import format as fmt
from zor.common.errors import VerificationError

from .jsonsafe import jsonable
from .metadata import float_arrays
from .session import Stepper

__all__ = ["verify", "compare_runs", "make_inputs", "random_state", "ATOL", "RTOL_STATE", "TIE_TOL", "Comparison"]

ATOL = 1e-5
RTOL_STATE = 1e-5
TIE_TOL = 1e-5


@dataclass
class _Acc:
    """Running max / sum / count of absolute differences."""

    max: float = 0.0
    sum: float = 0.0
    n: int = 0
    over: int = 0          # elements past tolerance

    def add(self, diff: np.ndarray, limit: Optional[np.ndarray] = None) -> None:
        if diff.size == 0:
            return
        self.max = max(self.max, float(diff.max()))
        self.sum += float(diff.sum(dtype=np.float64))
        self.n += diff.size
        if limit is not None:
            self.over += int((diff > limit).sum())

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max, "mean_abs_diff": self.sum / self.n if self.n else 0.0, "compared": self.n}


@dataclass
class _LayerAcc:
    compared: int = 0
    mismatches: int = 0
    ties: int = 0
    charge: _Acc = field(default_factory=_Acc)

    def as_dict(self, index: int) -> dict[str, Any]:
        n = self.compared
        return {
            "layer": index,
            "compared": n,
            "spike_agreement": (n - self.mismatches) / n if n else 1.0,   # ties counted as agreeing
            "raw_spike_agreement": (n - self.mismatches - self.ties) / n if n else 1.0,
            "mismatches": self.mismatches,
            "ties": self.ties,
            "charge_max_err": self.charge.max,
            "charge_mean_err": self.charge.sum / self.charge.n if self.charge.n else 0.0,
        }


@dataclass
class Comparison:
    """What :func:`compare_runs` measured."""

    layers: list
    outputs: dict
    rows_diverged: int = 0
    failures: list = field(default_factory=list)
    reference: list = field(default_factory=list)   # collected torch outputs, one (B, n_L) per step
    candidate: list = field(default_factory=list)   # collected onnx outputs

    def layer_report(self) -> list[dict[str, Any]]:
        return [acc.as_dict(i) for i, acc in enumerate(self.layers)]

    def output_report(self) -> dict[str, dict[str, Any]]:
        return {name: acc.as_dict() for name, acc in self.outputs.items()}


def _input_range(model) -> tuple[float, float]:
    rng = (model.task or {}).get("input", {}) if isinstance(model.task, dict) else {}
    r = rng.get("range") if isinstance(rng, dict) else None
    try:
        lo, hi = float(r[0]), float(r[1])
        if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
            return lo, hi
    except (TypeError, ValueError, IndexError):
        pass
    return 0.0, 1.0


def make_inputs(model, batch: int, steps: int, data: Optional[np.ndarray] = None, seed: int = 0) -> np.ndarray:
    """Inputs (T, B, n_0): half rows drawn from ``data`` (when given), half uniform in the task's input range."""
    rng = np.random.default_rng(seed)
    n0 = model.layers[0].size
    lo, hi = _input_range(model)
    xs = rng.uniform(lo, hi, size=(steps, batch, n0)).astype(np.float32)
    if data is not None and len(data):
        k = batch - batch // 2 if batch > 1 else 1
        idx = rng.integers(0, len(data), size=(steps, k))
        xs[:, :k] = np.asarray(data, np.float32)[idx]
    return xs


def random_state(model, batch: int, seed: int = 1) -> dict[int, np.ndarray]:
    """A random charge state (uniform in [−1, 1]) for every stateful layer."""
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-1.0, 1.0, size=(batch, layer.size)).astype(np.float32)
            for i, layer in enumerate(model.layers) if layer.stateful}


def _check_names(model, stepper: Stepper) -> list[str]:
    want_in = [fmt.INPUT] + [fmt.state_in(i) for i, l in enumerate(model.layers) if l.stateful]
    want_out = ([fmt.OUTPUT] + [fmt.state_out(i) for i, l in enumerate(model.layers) if l.stateful]
                + [fmt.spikes(i) for i in range(len(model.layers))] + [fmt.charge(i) for i in range(len(model.layers))])
    failures = []
    if sorted(stepper.input_names) != sorted(want_in):
        failures.append(f"input names: expected {want_in}, got {stepper.input_names}")
    missing = [n for n in want_out if n not in stepper.output_names]
    if missing:
        failures.append(f"output names: missing {missing} (the graph has {stepper.output_names})")
    return failures


def compare_runs(
    model,
    onnx_model: Union[onnx.ModelProto, bytes, Stepper],
    runs: list[tuple[str, np.ndarray, Optional[dict[int, np.ndarray]]]],
    excuse_ties: bool = True,
    tie_tol: float = TIE_TOL,
    atol: float = ATOL,
    rtol_state: float = RTOL_STATE,
    collect: bool = False,
    threads: int = 1,
    max_batch: Optional[int] = None,
) -> Comparison:
    """Run each (name, xs (T, B, n_0), initial state or None) through both sides and compare.

    ``excuse_ties=False`` (int8 measurement) counts every spike flip and never drops rows.
    The model's own carried state is restored afterwards. ``max_batch``: the graph
    takes at most that many rows per call (a sparse export): batches run in chunks.
    """
    stepper = onnx_model if isinstance(onnx_model, Stepper) else Stepper(onnx_model, threads=threads,
                                                                          max_batch=max_batch)
    n_layers = len(model.layers)
    thetas, _ = float_arrays(model)
    near = [np.maximum(1.0, np.where(np.isfinite(t), np.abs(t), 1.0)) * tie_tol for t in thetas]
    comp = Comparison(layers=[_LayerAcc() for _ in range(n_layers)],
                      outputs={fmt.OUTPUT: _Acc(), **{fmt.state_out(i): _Acc()
                                                      for i, l in enumerate(model.layers) if l.stateful}})
    comp.failures.extend(_check_names(model, stepper))
    if comp.failures:
        return comp
    fetch = [fmt.OUTPUT] + [fmt.spikes(i) for i in range(n_layers)] + [fmt.charge(i) for i in range(n_layers)]
    saved = model.state
    shapes_checked = False
    try:
        for _, xs, init in runs:
            active = _start(model, stepper, xs.shape[1], init)
            for t in range(xs.shape[0]):
                ref_out, traces = model.run(torch.from_numpy(xs[t]))
                got = stepper.step(xs[t], fetch)
                if not shapes_checked:
                    shapes_checked = True
                    comp.failures.extend(_check_shapes(traces, ref_out, got))
                    if comp.failures:
                        return comp
                out_ref = ref_out.cpu().numpy()
                _compare_layers(comp, traces, got, active, (thetas, near) if excuse_ties else None)
                _compare_outputs(comp, model, stepper, out_ref, got, active, atol, rtol_state)
                if collect:
                    comp.reference.append(out_ref)
                    comp.candidate.append(got[fmt.OUTPUT])
            comp.rows_diverged += int((~active).sum())
    finally:
        model.set_state(saved)
    return comp


def _start(model, stepper: Stepper, batch: int, init: Optional[dict[int, np.ndarray]]) -> np.ndarray:
    """Both sides at rest (``init`` None) or in the given state; every row active."""
    if init is None:
        model.reset_state()
        stepper.reset(batch, sizes={i: l.size for i, l in enumerate(model.layers)})
    else:
        model.set_state([torch.from_numpy(init[i]) if i in init else None for i in range(len(model.layers))])
        stepper.reset(batch, state=init)
    return np.ones(batch, dtype=bool)


def _check_shapes(traces, ref_out, got: dict[str, np.ndarray]) -> list[str]:
    """Failures where a charge, spike or output tensor of the graph has another shape than the engine's."""
    failures = []
    for i, tr in enumerate(traces):
        for name, want in ((fmt.charge(i), tuple(tr.c.shape)), (fmt.spikes(i), tuple(tr.s.shape))):
            if got[name].shape != want:
                failures.append(f"shape of {name}: expected {want}, got {got[name].shape}")
    if got[fmt.OUTPUT].shape != tuple(ref_out.shape):
        failures.append(f"shape of output: expected {tuple(ref_out.shape)}, got {got[fmt.OUTPUT].shape}")
    return failures


def _compare_layers(comp: Comparison, traces, got: dict[str, np.ndarray], active: np.ndarray,
                    ties: Optional[tuple[list, list]]) -> None:
    """Charge errors and spike flips of every layer on the active rows.

    ``ties`` (θ per layer, tie distance per layer) excuses flips at a tie and drops their
    rows from ``active`` (in place) for what follows; None counts every flip.
    """
    for i, tr in enumerate(traces):
        acc = comp.layers[i]
        c_ref = tr.c.cpu().numpy()
        s_ref = tr.s.cpu().numpy() > 0.5
        c_got, s_got = got[fmt.charge(i)], got[fmt.spikes(i)].astype(bool)
        rows = active.copy()
        acc.charge.add(np.abs(c_ref[rows] - c_got[rows]))
        flip = (s_ref != s_got)[rows]
        acc.compared += flip.size
        if ties is None:
            acc.mismatches += int(flip.sum())
            continue
        thetas, near_scale = ties
        near = (np.abs(c_ref - thetas[i]) <= near_scale[i])[rows]
        tie = flip & near
        acc.ties += int(tie.sum())
        acc.mismatches += int((flip & ~near).sum())
        active[np.flatnonzero(rows)[tie.any(axis=1)]] = False


def _compare_outputs(comp: Comparison, model, stepper: Stepper, out_ref: np.ndarray, got: dict[str, np.ndarray],
                     active: np.ndarray, atol: float, rtol_state: float) -> None:
    """Absolute differences of ``output`` and of every carried state on the active rows."""
    comp.outputs[fmt.OUTPUT].add(np.abs(out_ref[active] - got[fmt.OUTPUT][active]),
                                 np.float32(atol) * np.maximum(np.float32(1), np.abs(out_ref[active])))
    for i, layer in enumerate(model.layers):
        if layer.stateful:
            st_ref = model.state[i].cpu().numpy()[active]
            st_got = stepper.state[i][active]
            comp.outputs[fmt.state_out(i)].add(np.abs(st_ref - st_got), atol + rtol_state * np.abs(st_ref))


def verify(
    model,
    onnx_model: Union[onnx.ModelProto, bytes],
    data: Optional[np.ndarray] = None,
    batch: int = 32,
    steps: Optional[int] = None,
    seed: int = 0,
    atol: float = ATOL,
    rtol_state: float = RTOL_STATE,
    tie_tol: float = TIE_TOL,
    mode: str = "float32",
    raise_on_failure: bool = True,
    threads: int = 1,
    max_batch: Optional[int] = None,
) -> dict[str, Any]:
    """Compare ``onnx_model`` with the engine ``model``; return the report, raise VerificationError on failure.

    ``steps`` defaults to 1 for stateless and 100 for stateful models; stateful
    models run from rest and from a random state. ``data`` (N, n_0) supplies half of
    each batch (the rest is uniform in the task's input range).
    """
    start = time.perf_counter()
    steps = steps if steps is not None else (100 if model.stateful else 1)
    xs = make_inputs(model, batch, steps, data, seed)
    runs: list = [("from_zero", xs, None)]
    if model.stateful:
        runs.append(("from_random", make_inputs(model, batch, steps, data, seed + 1), random_state(model, batch, seed + 2)))
    comp = compare_runs(model, onnx_model, runs, excuse_ties=True, tie_tol=tie_tol, atol=atol,
                        rtol_state=rtol_state, threads=threads, max_batch=max_batch)
    failures = list(comp.failures)
    layers, outputs = comp.layer_report(), comp.output_report()
    if not failures:
        for row in layers:
            if row["mismatches"]:
                failures.append(f"layer {row['layer']}: {row['mismatches']} spike mismatches away from ties "
                                f"(agreement {100 * row['spike_agreement']:.4f} %, expected 100 %)")
        for name, acc in comp.outputs.items():
            if acc.over:
                limit = f"{atol:g}·max(1, |o|)" if name == fmt.OUTPUT else f"{atol:g} + {rtol_state:g}·|c|"
                failures.append(f"{name}: max abs diff {acc.max:.3g} past tolerance {limit} "
                                f"({acc.over} of {acc.n} values)")
    report = {
        "mode": mode,
        "passed": not failures,
        "tolerance": {"atol": atol, "rtol_state": rtol_state, "tie_tol": tie_tol},
        "batch": batch,
        "steps": steps,
        "runs": [r[0] for r in runs],
        "layers": layers,
        "outputs": outputs,
        "rows_diverged_at_ties": comp.rows_diverged,
        "failures": failures,
        "seconds": round(time.perf_counter() - start, 4),
    }
    report = jsonable(report)
    if failures and raise_on_failure:
        raise VerificationError("verification failed: " + "; ".join(failures[:5])
                                + (f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""), report=report)
    return report
