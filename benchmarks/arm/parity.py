"""Parity figures between two runs of one exported model (numpy and zor.common.metrics only).

Used on both sides of the ARM check: by ``prepare.py`` on the x86-64 host (host int8
against host float32) and by ``check.py`` inside the emulated aarch64 root (aarch64
against the host), so both sides measure the same way.

float32 (same graph, another ISA): passes when

    max |y_arm − y_host| ≤ atol                                    (outputs)
    spikes identical, except a unit whose host charge c lies within atol of its
    threshold θ (|c − θ| ≤ atol: a tie that float rounding may decide either way)

int8 (the export's own tolerances, stored in its ``zor.quantization`` metadata):

    max |y_arm − y_host_int8| ≤ e and max |y_arm − y_host_float32| ≤ e, where e is the
        export's measured int8-vs-engine output error (the float32 run is the engine
        within 1e-5)
    spike agreement of each layer i ≥ 1 with the host float32 run ≥ spike_budget
    task metric drop (host float32 − arm int8, points) ≤ max_drop

Example:
    >>> import numpy as np
    >>> h = {"output": np.zeros((1, 2), np.float32), "spikes_0": np.array([[True, False]]),
    ...      "charge_0": np.array([[1.0, 0.0]], np.float32), "threshold_0": np.array([0.5, 0.5], np.float32)}
    >>> a = {"output": np.full((1, 2), 2e-6, np.float32), "spikes_0": np.array([[True, False]])}
    >>> r = float_parity(h, a, 1e-5); r["passed"], r["spike_mismatches"]
    (True, 0)
"""

from __future__ import annotations

from typing import Any, Mapping

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


def int8_parity(host_int8: Mapping[str, np.ndarray], host_f32: Mapping[str, np.ndarray],
                candidate: Mapping[str, np.ndarray], x: np.ndarray, tol: Mapping[str, Any]) -> dict[str, Any]:
    """int8 ``candidate`` against the host int8 run and the host float32 run (see module doc)."""
    out = np.asarray(candidate["output"], np.float64)
    diff = np.abs(out - np.asarray(host_int8["output"], np.float64))
    off_float = float(np.max(np.abs(out - np.asarray(host_f32["output"], np.float64)), initial=0.0))
    agree = spike_agreement(host_f32, candidate)
    before = task_metric(tol["metric"], tol["reference"], host_f32["output"], x, host_f32["output"])
    after = task_metric(tol["metric"], tol["reference"], candidate["output"], x, host_f32["output"])
    max_abs = float(diff.max()) if diff.size else 0.0
    failures = []
    if max_abs > tol["output_max_err_at_export"]:
        failures.append(f"output differs from the host int8 run by {max_abs:.3g} > {tol['output_max_err_at_export']:.3g}")
    if off_float > tol["output_max_err_at_export"]:
        failures.append(f"output departs from the host float32 run by {off_float:.3g} > "
                        f"{tol['output_max_err_at_export']:.3g} (the export's int8-vs-engine figure)")
    for i, a in enumerate(agree):
        if i >= 1 and a < tol["spike_budget"]:
            failures.append(f"layer {i}: spike agreement {100 * a:.3f} % < budget {100 * tol['spike_budget']:g} %")
    if before - after > tol["max_drop"]:
        failures.append(f"metric drop {before - after:.3f} > max drop {tol['max_drop']:g}")
    return {"output_max_abs_vs_host_int8": max_abs, "output_max_abs_vs_host_float32": off_float,
            "bit_exact_vs_host_int8": bool(max_abs == 0.0
                                                                                  and spike_agreement(host_int8, candidate)
                                                                                  == [1.0] * len(agree)),
            "spike_agreement_vs_host_float32": agree, "metric": tol["metric"], "metric_float32": before,
            "metric_int8": after, "metric_drop": before - after, "tolerance": dict(tol),
            "failures": failures, "passed": not failures}
