"""Export a Zor model to one verified, self-describing ONNX file: the pipeline.

:func:`export` runs these steps in order, each its own function, and writes nothing
until every one passed:

1. **check** (:func:`_check`): the settings (:class:`~zor.export.options.ExportOptions`),
   the device profile, the output folder, the checkpoint, and the calibration data:
   the caller's, else the data set the model's task records
   (:mod:`zor.export.calibration`), never a guess;
2. **build** the float32 per-step graph once (:func:`zor.export.graph.to_onnx`): it is
   verified, quantized, and the spike rates of ``path="auto"`` are measured on it;
3. **plan** the layers (:func:`_plan`): each connection dense or sparse
   (:mod:`zor.export.paths`); a plan with sparse connections is a different graph
   (their rows are gathered by Compress), so only then is the graph built again;
4. **verify** against the torch engine (unless ``verify_model=False``): the float
   graph, and the sparse one when there is one (``zor.verification``: ``float32``,
   ``sparse``);
5. **quantize**: ``"int8"`` threshold-aware static quantization with per-layer
   fallback, refused past ``max_drop`` (:mod:`zor.export.quantize`; sparse connections
   get int8 rows, each rebuilt in float while it costs the budgets); ``"fp16"``
   float16 weights, verified against the engine with the same rounded weights and
   measured against the float engine (:mod:`zor.export.fp16`);
6. **write**: metadata (task, layers, state, recipe, calibration figures, the
   reports, the weights hash), the graph checked, ``zor.integrity`` recorded last (what
   every load checks), the file written atomically (``external_weights``: tensors in a
   weights file, the pair switched at one rename, :mod:`zor.export.external`).

The spike rates a sparse plan is made from are measured on the calibration data, or
on random rows in the task's input range when there is none.

Example:
    >>> import tempfile, os
    >>> from zor import Zor, Layer
    >>> out = os.path.join(tempfile.mkdtemp(), "m.onnx")
    >>> res = export(Zor([Layer(4), Layer(3), Layer(4)], seed=0), out)
    >>> res.mode, res.verification["passed"]
    ('none', True)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

import onnx
from zor.devices import Profile

from zor.common.errors import QuantizationError
from zor.common.fileio import write_bytes_atomic
from zor.engine.network import Zor

from .calibration import CalibrationSet, find_calibration, load_calibration
from .external import remove_stale_weights, write_external
from .fp16 import rounded_model, to_fp16
from .graph import check_proto, to_onnx
from .jsonsafe import jsonable
from .metadata import build_metadata, set_integrity, set_metadata
from .options import MODES, ExportOptions, options_from
from .paths import PathPlan, dense_plan, measure_rates, plan_paths
from .quality import measure
from .quantize import quantize_int8
from .source import check_output, load_source, resolve_profile
from .verify import make_inputs, verify

__all__ = ["ExportResult", "ExportOptions", "export", "MODES"]

T = TypeVar("T")
# what the quantize step gives: (final graph, quantization report, calibration figures, final path plan)
_Quantized = tuple[onnx.ModelProto, dict[str, Any], dict[str, Any], PathPlan]


@dataclass
class ExportResult:
    """What :func:`export` wrote and the reports it stored in the file's metadata."""

    path: Path
    mode: str
    bytes: int
    verification: dict
    quantization: dict
    calibration: dict
    timings: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)


@dataclass
class _Job:
    """What the steps of one export share: the checked settings and inputs, and the seconds each step took."""

    opts: ExportOptions
    output: Path
    model: Zor                              # on the CPU
    engine_version: str
    profile: Profile
    calib: Optional[CalibrationSet]         # None: no data; else it also feeds half of each verification batch
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, key: str, step: Callable[..., T], *args: Any) -> T:
        """Run one step, adding its seconds to ``timings[key]``."""
        start = time.perf_counter()
        try:
            return step(self, *args)
        finally:
            self.timings[key] = self.timings.get(key, 0.0) + time.perf_counter() - start

    def parity(self, proto: onnx.ModelProto, model: Optional[Zor] = None, **kw: Any) -> dict[str, Any]:
        """The verification report of ``proto`` against ``model`` (default: the job's) with the job's settings."""
        o = self.opts
        return verify(model or self.model, proto, data=None if self.calib is None else self.calib.validate,
                      steps=o.steps, batch=o.batch, threads=o.threads, **kw)


def export(source: Any, output: Union[str, os.PathLike], options: Optional[ExportOptions] = None,
           **settings: Any) -> ExportResult:
    """Export ``source`` (a Zor model or checkpoint path) to ``output``; see the module docstring.

    ``settings`` are :class:`ExportOptions` fields by keyword (``quantize="int8"``,
    ``device="rpi4"``, ...), laid over ``options`` when both are given.
    """
    start = time.perf_counter()
    job = _check(source, Path(output), options_from(options, settings))
    float_proto = job.timed("build_s", _build, None)
    plan, rates = job.timed("paths_s", _plan, float_proto)
    graph = job.timed("build_s", _planned_graph, float_proto, plan)
    verification = job.timed("verify_s", _verify, float_proto, graph, plan)
    final, quant, figures, plan = job.timed("quantize_s", _quantize, float_proto, graph, plan, rates, verification)
    size, meta, weights = job.timed("write_s", _write, final, plan, quant, figures, verification)
    job.timings["total_s"] = time.perf_counter() - start
    return ExportResult(path=job.output, mode=job.opts.quantize, bytes=size, verification=verification,
                        quantization=quant, calibration=figures, timings=jsonable(job.timings), metadata=meta,
                        paths=plan.to_dict(), weights=weights)


def _check(source: Any, output: Path, opts: ExportOptions) -> _Job:
    """Step 1: the settings, the device profile, the output folder, the checkpoint, the calibration data."""
    opts.check(output)
    profile = resolve_profile(opts.device)
    check_output(output, [source, opts.calibration])    # never the checkpoint or the calibration file itself
    model, engine_version = load_source(source)
    calib = find_calibration(opts.calibration, model.task, model.layers[0].size, required=opts.quantize == "int8")
    return _Job(opts=opts, output=output, model=model, engine_version=engine_version, profile=profile, calib=calib)


def _build(job: _Job, plan: Optional[PathPlan]) -> onnx.ModelProto:
    """The per-step graph of the job's model (dense float32 without a plan); metadata comes at the write."""
    return to_onnx(job.model, metadata={}, engine_version=job.engine_version, paths=plan)


def _plan(job: _Job, float_proto: onnx.ModelProto) -> tuple[PathPlan, dict[str, Any]]:
    """Step 3: the per-connection path plan and the spike-rate figures it was made from (none for ``dense``)."""
    opts, model = job.opts, job.model
    if opts.path == "dense":
        return dense_plan(model), {}
    if job.calib is not None:
        x, source = job.calib.calibrate, job.calib.source
    else:
        x = make_inputs(model, 256, 1, seed=5)[0]
        source = "256 uniform random rows in the task's input range (pass --calibration for real spike rates)"
    steps = 10 if model.stateful else 1
    rates, union = measure_rates(model, float_proto, x, steps=steps, max_batch=opts.max_batch, threads=opts.threads)
    plan = plan_paths(model, opts.path, job.profile, rates, union, max_batch=opts.max_batch, rates_source=source,
                      rates_rows=len(x), precision="int8" if opts.quantize == "int8" else "float32")
    figures = jsonable({"source": source, "calibration_rows": int(len(x)), "steps": steps,
                        "max_batch": opts.max_batch,
                        "layers": [{"layer": i, "spike_rate": r, "union_rate": u}
                                   for i, (r, u) in enumerate(zip(rates, union))]})
    return plan, figures


def _planned_graph(job: _Job, float_proto: onnx.ModelProto, plan: PathPlan) -> onnx.ModelProto:
    """The graph the plan asks for: the float graph itself while every connection is dense.

    Sparse connections change the graph (Compress nodes gather their rows), so it is
    built again, here with float32 rows: the form verification checks exactly (int8
    rows are built in the quantize step).
    """
    if not plan.sparse():
        return float_proto
    return _build(job, plan.with_precision({j: "float32" for j in plan.sparse()}))


def _verify(job: _Job, float_proto: onnx.ModelProto, graph: onnx.ModelProto, plan: PathPlan) -> dict[str, Any]:
    """Step 4: parity of the float graph (and of the sparse one) with the engine; VerificationError on failure."""
    if not job.opts.verify_model:
        return {"passed": None, "skipped": True}
    verification: dict[str, Any] = {"passed": True, "float32": job.parity(float_proto)}
    if graph is not float_proto:
        verification["sparse"] = job.parity(graph, max_batch=plan.max_batch)
    return verification


def _quantize(job: _Job, float_proto: onnx.ModelProto, graph: onnx.ModelProto, plan: PathPlan,
              rates: dict[str, Any], verification: dict[str, Any]) -> _Quantized:
    """Step 5: (final graph, quantization report, calibration figures, final plan) for the job's mode."""
    mode = job.opts.quantize
    if mode == "int8":
        final, quant, figures, plan = _int8(job, float_proto, plan)
        verification["int8"] = {"spike_agreement": [row["spike_agreement"] for row in quant["layers"]],
                                "metric_drop": quant["metric"]["drop"], "fallback": quant["fallback"]}
        return final, quant, figures, plan
    if mode == "fp16":
        final, quant = _fp16(job, float_proto, verification)
        return final, quant, job.calib.describe() if job.calib is not None else {}, plan
    return graph, {"mode": "none"}, rates, plan


def _int8(job: _Job, float_proto: onnx.ModelProto, plan: PathPlan) -> _Quantized:
    """int8 with sparse connections: their rows int8 (integer product) unless that costs the spike budget or the
    metric budget, then float rows, one connection at a time (the dense ones fall back inside quantize_int8)."""
    opts, profile = job.opts, job.profile
    precisions = {j: "int8" for j in plan.sparse()}
    while True:
        cand_plan = plan.with_precision(precisions)
        # the rows' precision changes the graph (int8 initializers, Cast, scale): built for each choice
        cand = _build(job, cand_plan) if precisions else float_proto
        try:
            q, quant, figures = quantize_int8(job.model, cand, job.calib, profile.int8, profile=profile.name,
                                              spike_budget=opts.spike_budget, max_drop=opts.max_drop,
                                              sparse=precisions, max_batch=cand_plan.max_batch)
        except QuantizationError as exc:
            worst = _worst_int8_rows(getattr(exc, "report", None) or {}, precisions)
            if worst is None:
                raise
            precisions[worst] = "float32"
            continue
        agree = {row.get("connection"): row["spike_agreement"] for row in quant["layers"] if "connection" in row}
        bad = sorted(j for j, p in precisions.items() if p == "int8" and agree.get(j, 1.0) < opts.spike_budget)
        if not bad:
            return q, quant, figures, cand_plan
        precisions[bad[0]] = "float32"


def _worst_int8_rows(report: dict, precisions: dict[int, str]) -> Optional[int]:
    """The int8-rows connection whose next layer agrees least with the engine (None: no int8 rows left)."""
    rows = [j for j, p in precisions.items() if p == "int8"]
    if not rows:
        return None
    agree = {row.get("connection"): row.get("spike_agreement", 1.0) for row in report.get("layers", [])}
    return min(rows, key=lambda j: (agree.get(j, 1.0), j))


def _fp16(job: _Job, float_proto: onnx.ModelProto,
          verification: dict[str, Any]) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """(fp16 graph, its report): verified against the engine with rounded weights, measured against the float one."""
    opts, model = job.opts, job.model
    final = to_fp16(float_proto)
    if opts.verify_model:
        verification["fp16"] = job.parity(final, model=rounded_model(model), mode="fp16")
    cal = job.calib or load_calibration(make_inputs(model, 64, 1, seed=3)[0], model.layers[0].size)
    quality = measure(model, final, cal)
    quant = jsonable({"mode": "fp16", "weights": "float16 (Cast to float32)", "thresholds": "float32",
                      "max_drop": opts.max_drop, "layers": quality["layers"], "output": quality["output"],
                      "metric": quality["metric"],
                      "validation": {"rows": quality["rows"], "steps": quality["steps"], "source": cal.source},
                      "size": {"float32_graph_bytes": len(float_proto.SerializeToString()),
                               "fp16_graph_bytes": len(final.SerializeToString())}})
    if quant["metric"]["drop"] > opts.max_drop:
        raise QuantizationError(f"fp16 export refused: the task metric drops by {quant['metric']['drop']:.3f} "
                                f"points, more than --max-drop {opts.max_drop:g}; nothing was written", report=quant)
    return final, quant


def _write(job: _Job, final: onnx.ModelProto, plan: PathPlan, quant: dict[str, Any], figures: dict[str, Any],
           verification: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Step 6: metadata in, graph checked, file written atomically; (bytes, metadata, external weights spec)."""
    meta = build_metadata(job.model, job.engine_version, quantization=quant, calibration=figures,
                          verification=verification, paths=plan)
    set_metadata(final, meta)
    check_proto(final)
    if job.opts.external_weights:
        weights = write_external(final, job.output, model=job.model, metadata=meta)
        return job.output.stat().st_size, _final_metadata(final), weights
    set_integrity(final)
    data = final.SerializeToString()
    write_bytes_atomic(job.output, data)
    remove_stale_weights(job.output, keep=None)     # an earlier --external-weights export to this name
    return len(data), _final_metadata(final), {}


def _final_metadata(proto: onnx.ModelProto) -> dict[str, str]:
    """The ``zor.*`` metadata as written (``zor.weights`` and ``zor.integrity`` included)."""
    return {p.key: p.value for p in proto.metadata_props if p.key.startswith("zor.")}
