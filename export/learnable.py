"""``--learnable`` export: a Zor learning step as an ONNX file a device can train with.

:func:`export_learnable` checks that every layer is one the step graph expresses
(:mod:`zor.export.learnable_graph`), builds the graph, runs the same start and the same
``batches`` random batches through onnxruntime and through the torch engine, and only
when they agree writes the file (atomically):

    rel(a, b) = ‖a − b‖₂ / max(‖b‖₂, 1e-12)  ≤ 1e-4   for the output, weights, θ and r
                                             ≤ 1e-3   for optimiser moments and novelty traces
    (the element-wise max|a − b| / max|b| is reported too, not bounded: Adam's m/√v turns
    float noise on gradients near 0 into steps of up to lr on single elements)
    spike agreement = 100 %, units with |c − θ| ≤ 1e-5 · max(1, |θ|) (exact ties) left out

File: the step graph; the start state as initializers named like the state inputs (a
graph input with an initializer is an input with a default; the tensors of ``transposed`` as W_iᵀ); metadata ``zor.format`` =
``zor-learnable``, ``zor.learnable`` (JSON: the hyper-parameters, sizes, state names,
:func:`~zor.export.learnable_graph.spec_of`), ``zor.verification`` (JSON report); a file with
masked connections (zor.export.learnable_masked) also ``zor.learnable_every_unit``: base64 of its
second step graph (same inputs and outputs, every product), checked against the engine in the same
way (its report under ``every_unit``).
Failures are collected and raised together as a VerificationError carrying the report.

Example:
    >>> import tempfile, os
    >>> from zor import Zor, Layer
    >>> out = os.path.join(tempfile.mkdtemp(), "m-learn.onnx")
    >>> export_learnable(Zor([Layer(4), Layer(3), Layer(4)], seed=0), out, batches=5)["passed"]
    True
"""

from __future__ import annotations

import base64
import copy
import os
import tempfile
from typing import Any, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from zor.common.errors import VerificationError
from zor.common.fileio import check_output_file, write_bytes_atomic
from zor.common.moments import EVERY
from zor.common.moments import STATE as MOMENT_STATE
from zor.engine.network import Zor

from .jsonsafe import dumps
from .learnable_blocks import run_step
from .learnable_graph import build_step_graph, spec_of, state_names
from .metadata import set_integrity

__all__ = ["export_learnable", "verify_learnable", "initial_state", "LEARNABLE_FORMAT", "TOLERANCE",
           "MOMENT_TOLERANCE"]

LEARNABLE_FORMAT = "zor-learnable"
TEMPLATE_KEY = "zor.inference_template"   # base64 of the inference file (float32, dense) Learner.save writes
EVERY_UNIT_KEY = "zor.learnable_every_unit"   # base64 of the masked file's second step graph (every product)
TOLERANCE = 1e-4          # relative bound on the output, weights, thresholds and rates after every step
MOMENT_TOLERANCE = 1e-3   # relative bound on optimiser moments and novelty traces (sums of many float32
                          #   products whose accumulation order differs between onnxruntime and torch)
_TIE = 1e-5               # |c − θ| ≤ _TIE · max(1, |θ|): an exact tie, left out of the spike agreement


def initial_state(net: Zor) -> dict[str, np.ndarray]:
    """The state inputs of the step graph at the network's current point (float32 numpy)."""
    spec = spec_of(net)
    state: dict[str, np.ndarray] = {}
    step = 0.0
    for i, w in enumerate(net.weights):
        st = net.optimizer.state.get(w, {})
        state[f"weight_{i}"] = w.detach().cpu().numpy().astype(np.float32)
        zeros = np.zeros(tuple(w.shape), np.float32)
        if spec["optimizer"] == "sgd":
            buf = st.get("momentum_buffer")
            state[f"momentum_{i}"] = zeros if buf is None else buf.cpu().numpy().astype(np.float32)
        else:
            state[f"adam_m_{i}"] = st["exp_avg"].cpu().numpy().astype(np.float32) if "exp_avg" in st else zeros
            state[f"adam_v_{i}"] = st["exp_avg_sq"].cpu().numpy().astype(np.float32) if "exp_avg_sq" in st \
                else zeros.copy()
        if "step" in st:
            step = float(st["step"])
        if spec["layers"][i]["novelty_factor"] != 0.0:
            state[f"novelty_{i}"] = net.novelty_trace(i).cpu().numpy().astype(np.float32)
    for i in range(len(net.layers)):
        state[f"threshold_{i}"] = net.threshold(i).cpu().numpy().astype(np.float32)
        state[f"rate_{i}"] = net.rate(i).cpu().numpy().astype(np.float32)
    state["step"] = np.asarray(step, np.float32)
    state[MOMENT_STATE] = np.zeros((), np.float32)           # moments at scale 1 (zor.common.moments)
    return {n: state[n] for n in state_names(spec)}


def _finite_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a − b, b) as float64 with equal infinities (θ = −inf of the output layer) counted as equal."""
    with np.errstate(invalid="ignore"):
        same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
        return np.where(same_inf, 0.0, a.astype(np.float64) - b), np.where(np.isinf(b), 0.0, b).astype(np.float64)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖₂ / max(‖b‖₂, 1e-12): the checked relative difference of a tensor."""
    diff, ref = _finite_pair(a, b)
    return float(np.linalg.norm(diff) / max(float(np.linalg.norm(ref)), 1e-12))


def _rel_max(a: np.ndarray, b: np.ndarray) -> float:
    """max|a − b| / max|b|: element-wise, reported (Adam's m/√v turns float noise on gradients near 0
    into steps of up to lr on single elements, so this one is not bounded by the tolerance)."""
    diff, ref = _finite_pair(a, b)
    return float(np.abs(diff).max(initial=0.0) / max(float(np.abs(ref).max(initial=0.0)), 1e-12))


def _bound(name: str) -> float:
    return MOMENT_TOLERANCE if name.startswith(("adam_", "momentum_", "novelty_")) else TOLERANCE


def _spike_check(net: Zor, traces: list, spikes: list, report: dict) -> None:
    for i, t in enumerate(traces):
        c = t.c.cpu().numpy()
        theta = net.unit_threshold(i).cpu().numpy()
        with np.errstate(invalid="ignore"):
            tie = np.abs(c - theta) <= _TIE * np.maximum(1.0, np.abs(np.where(np.isinf(theta), 0.0, theta)))
        mine = t.s.cpu().numpy() > 0.5
        theirs = spikes[i] > 0.5
        report["spikes"] += int((~tie).sum())
        report["spike_mismatches"] += int(((mine != theirs) & ~tie).sum())


def verify_learnable(net: Zor, batches: int = 100, batch_size: int = 16, seed: int = 0, masked: bool = True,
                     every_unit: bool = False) -> dict:
    """Same start, same batches: graph (onnxruntime) vs engine, each step from the engine's state before it;
    the report, failures collected. ``every_unit``: the second step graph of a masked file (see build_step_graph)."""
    proto = build_step_graph(net, spikes=True, masked=masked, every_unit=every_unit)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    engine = copy.deepcopy(net)
    state = initial_state(net)
    names, spec = list(state), spec_of(net, masked)
    outs = ["output"] + [f"spikes_{i}" for i in range(len(net.layers))]
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    elementwise: dict[str, float] = {}
    report = {"batches": batches, "batch_size": batch_size, "tolerance": TOLERANCE,
              "moment_tolerance": MOMENT_TOLERANCE, "spikes": 0,
              "spike_mismatches": 0}
    for j in range(batches):
        x = rng.random((batch_size, net.sizes[0]), dtype=np.float32)
        target = rng.random((batch_size, net.sizes[-1]), dtype=np.float32)
        tau = (j * 37) % (2 * EVERY)       # scaled moments fed at τ = 0..2·EVERY − 1 (as far as a Learner lets τ go)
        got, new = run_step(sess, spec, names, state, x, target, outs, tau)
        _, traces = engine.run(x)                          # spikes with θ before the step
        _spike_check(engine, traces, [got[f"spikes_{i}"] for i in range(len(net.layers))], report)
        errors = engine.train_batch(x, target).cpu().numpy()
        want = initial_state(engine)
        worst["output"] = max(worst.get("output", 0.0), _rel(got["output"], target - errors))
        elementwise["output"] = max(elementwise.get("output", 0.0), _rel_max(got["output"], target - errors))
        for n in names:
            if n == "step" and net.config.optimizer == "sgd" or n == MOMENT_STATE:
                continue                                   # torch's SGD keeps no step count; τ is 0 on both
            worst[n] = max(worst.get(n, 0.0), _rel(new[n], want[n]))
            elementwise[n] = max(elementwise.get(n, 0.0), _rel_max(new[n], want[n]))
        state = want                # the next step starts both from the engine's state: each step is
        # checked on its own, so a rounding-level spike flip near θ cannot compound over 100 steps
    failures = [f"{n}: relative difference {v:.3g} > {_bound(n):g}" for n, v in worst.items() if not v <= _bound(n)]
    if report["spike_mismatches"]:
        failures.append(f"spikes: {report['spike_mismatches']} of {report['spikes']} differ (ties left out)")
    report.update(worst=worst, elementwise=elementwise, failures=failures, passed=not failures)
    return report


def _inference_template(net: Zor) -> str:
    """The float32 dense inference file zor-export writes for ``net`` (verified), as base64: what
    Learner.save patches with the learned weights (zor.runtime.onnxwrite)."""
    from .api import export  # the whole export pipeline, only for this file

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "template.onnx")
        export(net, path, path="dense", quantize="none")
        with open(path, "rb") as f:
            return base64.b64encode(f.read()).decode("ascii")


def export_learnable(source: Union[Zor, str, os.PathLike], output: Union[str, os.PathLike],
                     batches: int = 100, batch_size: int = 16, seed: int = 0, masked: bool = True) -> dict[str, Any]:
    """Write the verified learning-step file of ``source`` (a Zor or a checkpoint path) to ``output``.

    Returns the verification report; VerificationError (with it) when graph and engine differ,
    UnsupportedLayerError (exit 2) for a layer the step graph cannot express. ``masked=False``: no connection
    forms its co-activity on the active post units only (zor.export.learnable_masked), every product instead
    (cheaper for a network whose hidden units nearly all spike for every batch)."""
    inputs = [] if isinstance(source, Zor) else [source]
    check_output_file(output, inputs)
    net = source if isinstance(source, Zor) else Zor.load(source, device="cpu")
    proto = build_step_graph(net, masked=masked)       # raises UnsupportedLayerError first
    report = verify_learnable(net, batches, batch_size, seed, masked)
    second = None
    if spec_of(net, masked)["transposed"]:          # the masked form's twin for batches where most units spike
        second = build_step_graph(net, masked=masked, every_unit=True)
        twin = verify_learnable(net, batches, batch_size, seed, masked, every_unit=True)
        report["every_unit"] = {k: twin[k] for k in ("worst", "spike_mismatches", "failures", "passed")}
        report["failures"] = report["failures"] + [f"every-unit graph: {f}" for f in twin["failures"]]
        report["passed"] = report["passed"] and twin["passed"]
    if not report["passed"]:
        raise VerificationError("learnable graph differs from the engine: " + "; ".join(report["failures"]), report)
    spec = dict(spec_of(net, masked), state=state_names(spec_of(net)), task=net.task)
    for name, value in initial_state(net).items():      # in the graph's layout (W_iᵀ where spec["transposed"])
        value = np.ascontiguousarray(value.T) if name in spec["transposed"] else value
        proto.graph.initializer.append(numpy_helper.from_array(value, name))
    meta = {"zor.format": LEARNABLE_FORMAT, "zor.format_version": "1", "zor.learnable": dumps(spec),
            "zor.verification": dumps(report), TEMPLATE_KEY: _inference_template(net)}
    if second is not None:                             # same inputs and outputs; no initializers (the Learner binds)
        meta[EVERY_UNIT_KEY] = base64.b64encode(second.SerializeToString()).decode("ascii")
    helper.set_model_props(proto, meta)
    set_integrity(proto)                               # zor.integrity: what Learner checks on every load
    onnx.checker.check_model(proto, full_check=True)
    write_bytes_atomic(output, proto.SerializeToString())
    return report
