"""The export and runtime part of the translation benchmark (``python -m benchmarks.translation``): the Zor
model exported as float32 and int8 and verified, both scored through the torch-free runtime, and their speed
against the torch engine's, timed in turn; and the score row every translation benchmark prints."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from benchmarks import common

__all__ = ["SPEED_ROUNDS", "score_row", "export_translation", "runtime_part", "interleaved_speeds"]

SPEED_ROUNDS = 5              # runtime and engine speed: rounds of one pass each, timed in turn


def score_row(name: str, hyps: list[str], refs: list[str], seconds: Optional[float] = None, **extra: Any) -> dict:
    """One method's row: chrF, chrF++ and BLEU of ``hyps`` against ``refs``, its training seconds and ``extra``."""
    from zor.common.textmetrics import score

    row = {"method": name, **score(hyps, refs), **extra}
    if seconds is not None:
        row["train_s"] = seconds
    return row


def export_translation(checkpoint: Path, out: Path, quantize: str, calibration: np.ndarray) -> dict[str, Any]:
    """``zor.export.export`` of a translation checkpoint (the pipeline ``zor-export`` runs), verified.

    ``batch=1``: every verified row is a real (sparse) step input, not the exporter's
    uniform random rows (dense noise that no step ever feeds the model). ``max_drop`` is
    left open because the exporter's task metric for a non-image task is 100·(1 − MAE)
    of the logits; the translation budget (chrF, int8 − float32 ≤ 0.5) is checked on
    the translations themselves by :func:`run_pair`.

    The exporter checks float32 outputs against an absolute 1e−5; a translation
    model's outputs are logits of size ~10–30, where float32 rounding alone differs by
    about that much. When the exporter's verification fails on the output values
    only (every spike identical), the file is exported without its built-in check and
    verified right after with the same 1e−5 taken relative to the largest output
    (atol = 1e−5 · max(1, max|o|)); int8 files are re-verified with ``verify_file``
    (spike budget). The result says which check passed.
    """
    from zor.export import export, load_model_file, verify, verify_file

    from zor.common.errors import VerificationError
    from zor.engine.network import Zor

    kw = dict(quantize=quantize, calibration=calibration, batch=1, steps=min(256, len(calibration)),
              max_drop=100.0, threads=1)
    check = "zor-export built-in verification"
    strict_failure = None
    try:
        res = export(checkpoint, out, **kw)
        report = res.verification
    except VerificationError as exc:
        failures = (exc.report or {}).get("failures") or [str(exc)]
        if not all(str(f).startswith("output:") for f in failures):
            raise
        strict_failure = failures[0]
        res = export(checkpoint, out, verify_model=False, **kw)
        model = Zor.load(checkpoint, device="cpu")
        if quantize == "none":
            scale = max(1.0, float(model.predict(calibration).abs().max()))
            report = verify(model, load_model_file(out), data=calibration, batch=1, steps=kw["steps"],
                            atol=1e-5 * scale)
            check = f"verify() at atol 1e-5 x max|o| = {1e-5 * scale:.2g} (outputs up to {scale:.1f})"
        else:
            report = verify_file(out, checkpoint, data=calibration)
            check = "verify_file (int8: spike budget and metric drop)"
    q = res.quantization or {}
    if quantize == "int8" and isinstance(report.get("int8"), dict):          # the exporter's int8 measurement
        agreement = report["int8"].get("spike_agreement")
    else:                                                                      # a parity report's layers
        layers = (report.get("float32") or report).get("layers") or []
        agreement = [r.get("spike_agreement") for r in layers] or None
    return {"path": str(out.name), "bytes": res.bytes, "verification_passed": bool(report.get("passed", True)),
            "check": check, "strict_failure": strict_failure, "spike_agreement": agreement,
            "fallback": q.get("fallback"), "export_s": res.timings.get("total_s")}


def runtime_part(pair, ckpt, spec, cfg, dev, typ, sources, refs, engine_hyps, workdir, seed):
    """Export float32 and int8, score both through the runtime, time them and the engine."""
    import torch
    from zor.runtime import Model
    from zor.runtime.tasks import Translator, speed

    from zor.tasks.translation import ZorTranslator, step_data

    zor = ZorTranslator.load(ckpt, device="cpu")              # export, runtime and speed figures: CPU
    cal_data = step_data(dev, spec, cfg.train_max_tokens)
    pick = np.random.default_rng(seed).choice(len(cal_data), size=min(512, len(cal_data)), replace=False)
    calib = spec.encoder.dense(cal_data, np.sort(pick))
    exports, runtime_rows, models = {}, [], {}
    for mode, label in (("none", "float32"), ("int8", "int8")):
        out = workdir / f"{pair}-{label}.onnx"
        exports[label] = export_translation(ckpt, out, mode, calib)
        model = models[label] = Model(out, threads=1)
        hyps = Translator(model).translate(sources, beam=1)
        same = float(np.mean([a == b for a, b in zip(hyps, engine_hyps)]))
        runtime_rows.append(score_row(f"zor runtime {label}", hyps, refs, None, beam=1, where=f"runtime {label}",
                                   same_as_engine=100.0 * same, bytes=exports[label]["bytes"]))
    texts = [p.source for p in typ]
    torch.set_num_threads(1)

    def engine_pass() -> tuple[float, int]:
        t = time.perf_counter()
        out_e = zor.translate(texts, beam=1, batch_size=1)
        return time.perf_counter() - t, sum(len(spec.target_tokenizer.encode(o)) for o in out_e)

    def runtime_pass(model, batch: int) -> tuple[float, int]:
        fig = speed(model, texts, batch_size=batch, repeats=1)
        return fig["seconds"][0], fig["target_tokens"]

    passes: dict[tuple[str, int], Callable[[], tuple[float, int]]] = {
        (f"runtime {label}", batch): (lambda m=m, b=batch: runtime_pass(m, b))
        for label, m in models.items() for batch in (1, 32)}
    passes[("engine float32 (torch)", 1)] = engine_pass       # the reference, timed in every round
    engine_pass()                                                # untimed warm-up
    return exports, runtime_rows, interleaved_speeds(passes, len(texts), SPEED_ROUNDS)


def interleaved_speeds(passes: dict[tuple[str, int], Callable[[], tuple[float, int]]], sentences: int,
                       rounds: int) -> list[dict[str, Any]]:
    """Time every pass once per round, ``rounds`` rounds, in turn (a noisy neighbour slows
    them alike); the last pass is the reference.

    Per pass: ``ms_per_sentence`` and ``tokens_per_s`` from the median pass time, and
    ``speedup_vs_engine``, the median over rounds of reference time / pass time.
    """
    taken = common.interleave(passes, rounds)
    times = {key: [seconds for seconds, _ in figures] for key, figures in taken.items()}
    tokens = {key: figures[-1][1] for key, figures in taken.items()}
    ref = list(passes)[-1]
    out = []
    for (model, batch), ts in times.items():
        med = common.median(ts)
        out.append({"model": model, "batch": batch, "ms_per_sentence": 1e3 * med / sentences,
                    "tokens_per_s": tokens[(model, batch)] / med, "target_tokens": tokens[(model, batch)],
                    "sentences": sentences, "seconds": ts,
                    "speedup_vs_engine": common.paired_ratio(times[ref], ts)})
    return out
