"""Parity figures between two runs of one exported model (numpy and zor.common.metrics only).

Used on both sides of the ARM check: by ``prepare.py`` on the x86-64 host (host int8
against host float32) and by ``check.py`` inside the emulated aarch64 root (aarch64
against the host), so both sides measure the same way.

float32 (same graph, another ISA): passes when

    max |y_arm − y_host| ≤ atol                                    (outputs)
    spikes identical, except a unit whose host charge c lies within atol of its
    threshold θ (|c − θ| ≤ atol: a tie that float rounding may decide either way)

int8 (nothing measured on one CPU's int8 run; tolerances from what the export promises
and from its quantisation, see qdq.py):

    the run reproduces the int8 graph's arithmetic for its kernel ("int32" or
        "int16_pairs", qdq.simulate): outputs within arithmetic_atol, spikes identical
        except at ties
    |y − y_host_float32| ≤ the per-element bound the scales imply (qdq.envelope)
    spike agreement of each layer i ≥ 1 with the host float32 run ≥ spike_budget
    task metric drop (host float32 − int8, points) ≤ max_drop
    against another int8 run (the host's): spike agreement ≥ 1 − 2·(1 − spike_budget)
        per layer i ≥ 1, as both lie within budget of float32; outputs reported

Example:
    >>> import numpy as np
    >>> h = {"output": np.zeros((1, 2), np.float32), "spikes_0": np.array([[True, False]]),
    ...      "charge_0": np.array([[1.0, 0.0]], np.float32), "threshold_0": np.array([0.5, 0.5], np.float32)}
    >>> a = {"output": np.full((1, 2), 2e-6, np.float32), "spikes_0": np.array([[True, False]])}
    >>> r = float_parity(h, a, 1e-5); r["passed"], r["spike_mismatches"]
    (True, 0)
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["float_parity", "int8_parity", "spike_agreement", "task_metric"]


def _layers(d: Mapping[str, Any], prefix: str = "") -> list[int]:
    return sorted(int(k[len(prefix) + 7:]) for k in d if k.startswith(prefix + "spikes_"))


def float_parity(host: Mapping[str, np.ndarray], arm: Mapping[str, np.ndarray], atol: float,
                 prefix: str = "") -> dict[str, Any]:
    """Output error and spike mismatches of ``arm`` against ``host`` (keys ``{prefix}output``,
    ``{prefix}spikes_{i}``; host also ``{prefix}charge_{i}`` and ``threshold_{i}`` for the tie excuse)."""
    diff = np.abs(np.asarray(arm[prefix + "output"], np.float64) - np.asarray(host[prefix + "output"], np.float64))
    mismatches = ties = compared = 0
    for i in _layers(host, prefix):
        hs, as_ = np.asarray(host[f"{prefix}spikes_{i}"]), np.asarray(arm[f"{prefix}spikes_{i}"])
        flip = hs != as_
        compared += int(hs.size)
        mismatches += int(flip.sum())
        charge, theta = host.get(f"{prefix}charge_{i}"), host.get(f"threshold_{i}")
        if flip.any() and charge is not None and theta is not None:
            ties += int((flip & (np.abs(np.asarray(charge) - np.asarray(theta)) <= atol)).sum())
    max_abs = float(diff.max()) if diff.size else 0.0
    return {"output_max_abs": max_abs, "output_mean_abs": float(diff.mean()) if diff.size else 0.0,
            "bit_exact": bool(max_abs == 0.0 and mismatches == 0), "atol": atol,
            "spike_mismatches": mismatches, "spike_mismatches_at_ties": ties, "spikes_compared": compared,
            "passed": bool(max_abs <= atol and mismatches == ties)}


def spike_agreement(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> list[float]:
    """Share of agreeing spikes per layer (layer 0 included: it sees the input alone)."""
    return [float(np.mean(np.asarray(reference[f"spikes_{i}"]) == np.asarray(candidate[f"spikes_{i}"])))
            for i in _layers(reference)]


def task_metric(kind: str, reference: str, output: np.ndarray, x: np.ndarray, float_output: np.ndarray) -> float:
    """The export's task metric: seed accuracy 100·(1 − MAE) against the input or the float
    output, or classification accuracy against the float model's predictions."""
    from zor.common import metrics

    if kind == "accuracy":
        return metrics.class_accuracy(output, np.argmax(float_output, axis=1))
    target = x if reference == "input" else float_output
    return float(metrics.reconstruction(output, target)["accuracy"])


def _int8_failures(r: Mapping[str, Any], ref_check: Mapping[str, Any], tol: Mapping[str, Any]) -> list[str]:
    """The reasons an int8 run misses ``tol`` (see the module doc), worded for a report."""
    failures = []
    if not ref_check["passed"]:
        failures.append(f"does not reproduce the {r['arithmetic']} arithmetic of the int8 graph: max |Δoutput| "
                        f"{ref_check['output_max_abs']:.3g} > {ref_check['atol']:g} or "
                        f"{ref_check['spike_mismatches'] - ref_check['spike_mismatches_at_ties']} spike flips off ties")
    if r["output_over_bound"] > 0:
        failures.append(f"output departs from the host float32 run by more than the quantisation bound "
                        f"(by up to {r['output_over_bound']:.3g} at {r['output_over_bound_count']} values)")
    for i, a in enumerate(r["spike_agreement_vs_host_float32"]):
        if i >= 1 and a < tol["spike_budget"]:
            failures.append(f"layer {i}: spike agreement {100 * a:.3f} % < budget {100 * tol['spike_budget']:g} %")
    if r["metric_drop"] > tol["max_drop"]:
        failures.append(f"metric drop {r['metric_drop']:.3f} > max drop {tol['max_drop']:g}")
    floor = 1.0 - 2.0 * (1.0 - tol["spike_budget"])
    for i, a in enumerate(r.get("spike_agreement_vs_host_int8") or []):
        if i >= 1 and a < floor:
            failures.append(f"layer {i}: spike agreement with the host int8 run {100 * a:.3f} % < "
                            f"{100 * floor:g} % (each run within budget of float32)")
    return failures


def int8_parity(candidate: Mapping[str, np.ndarray], host_f32: Mapping[str, np.ndarray],
                reference: Mapping[str, np.ndarray], bound: np.ndarray, x: np.ndarray, tol: Mapping[str, Any],
                arithmetic: str, host_int8: Optional[Mapping[str, np.ndarray]] = None) -> dict[str, Any]:
    """int8 ``candidate`` against the int8 graph's ``reference`` arithmetic (qdq.simulate for
    the candidate's kernel), the float32 run with the per-element ``bound`` (qdq.envelope),
    the export's budgets ``tol``, and, when given, the ``host_int8`` run (see module doc)."""
    out = np.asarray(candidate["output"], np.float64)
    off = np.abs(out - np.asarray(host_f32["output"], np.float64))
    over = off - np.asarray(bound, np.float64)
    ref_check = float_parity(reference, candidate, tol["arithmetic_atol"])
    before = task_metric(tol["metric"], tol["reference"], host_f32["output"], x, host_f32["output"])
    after = task_metric(tol["metric"], tol["reference"], candidate["output"], x, host_f32["output"])
    r: dict[str, Any] = {
        "arithmetic": arithmetic, "output_max_abs_vs_reference": ref_check["output_max_abs"],
        "spike_flips_vs_reference": ref_check["spike_mismatches"],
        "output_max_abs_vs_host_float32": float(off.max(initial=0.0)),
        "output_bound_max": float(np.max(bound, initial=0.0)),
        "output_share_of_bound": float(np.max(off / np.maximum(bound, 1e-30), initial=0.0)),
        "output_over_bound": float(max(over.max(initial=0.0), 0.0)), "output_over_bound_count": int((over > 0).sum()),
        "spike_agreement_vs_host_float32": spike_agreement(host_f32, candidate), "metric": tol["metric"],
        "metric_float32": before, "metric_int8": after, "metric_drop": before - after, "tolerance": dict(tol)}
    if host_int8 is not None:
        d = np.abs(out - np.asarray(host_int8["output"], np.float64))
        r["output_max_abs_vs_host_int8"] = float(d.max(initial=0.0))
        r["spike_agreement_vs_host_int8"] = spike_agreement(host_int8, candidate)
        r["bit_exact_vs_host_int8"] = bool(r["output_max_abs_vs_host_int8"] == 0.0
                                           and min(r["spike_agreement_vs_host_int8"]) == 1.0)
    r["failures"] = _int8_failures(r, ref_check, tol)
    r["passed"] = not r["failures"]
    return r
