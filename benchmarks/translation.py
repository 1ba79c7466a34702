"""Low-resource translation (Spanish → Nahuatl, Spanish → Otomí): Zor vs baselines, export, runtime speed.

For each language pair (``--pairs``; corpora from the ``elotl`` package, split by
document: no document in two splits, :mod:`zor.tasks.textdata`):

1. tokenizers (subword, ``--vocab`` entries a side) trained on the training split; the
   step framing of :mod:`zor.common.textfeatures` (training pairs longer than 96 tokens a
   side are left out of training, never out of the test);
2. methods, trained **for the same wall time** (``--budget`` s each, in interleaved
   10-second slices so a noisy neighbour slows all of them alike, one CPU thread):

   ===============  =============================================================
   zor              Zor [D, H, V] trained by Zor's rule (no autograd); error =
                    one-hot − softmax(charges) (softmax read-out of the charges)
   zor-charges      the same network, error = one-hot − charges (the raw charges)
   backprop         equal-size ReLU MLP [D, H, V] (no biases), Adam, cross-entropy
   backprop-mse     the same MLP trained on the squared error to one-hot targets
   backprop-sparse  the ``backprop`` MLP fed the same sparse batches as Zor (its first layer
                    a sparse × dense product, forward and in autograd's weight gradient)
   tm               translation memory: nearest training source by character
                    n-gram TF-IDF cosine, output its translation
   copy             the source sentence itself
   ===============  =============================================================

3. chrF, chrF++ and BLEU (sacrebleu, 0–100) on every test sentence, greedy decoding
   (and ``--beam`` when > 1) with the engine;
4. the Zor model exported with ``zor.export.export`` (the ``zor-export`` pipeline):
   float32 (verified against the engine on real step inputs) and int8 (threshold-aware,
   calibrated on step inputs of the dev split); both re-scored on the test set through
   the torch-free runtime (``zor.runtime.tasks.translate``); the int8 − float32 chrF
   difference is the quantization budget check (≤ 0.5 points);
5. runtime speed, one thread: ms per sentence and target tokens per second at batch 1
   (greedy) and at batch 32, for float32 and int8, on the test sentences of typical
   length (source length within ±25 % of the median over the whole corpus; the test
   documents may be longer than usual), next to the torch engine's batch-1 figure; the
   five are timed in turn, one pass each per round, over 5 rounds (medians; the speed-up
   is the median of the per-round ratios to the engine: these machines are shared).

Usage (from the repository root):
    python -m benchmarks.translation --json benchmarks/results/translation.json
    python -m benchmarks.translation --pairs es-nah --budget 300 --beam 4
    python -m benchmarks.translation --quick --json /tmp/t.json          # smoke test (minutes → seconds)
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import click
import numpy as np

from benchmarks import common
from benchmarks.translation_runtime import (
    export_translation,
    interleaved_speeds,
    runtime_part,
    score_row,
)
from zor.common.errors import ZorError

__all__ = ["settings_for", "train_equal_time", "Split", "prepare_split", "METHOD_NAMES", "train_methods", "typical",
           "export_translation", "run_pair", "interleaved_speeds", "main"]

GOAL_INT8_DROP = 0.5          # chrF points
GOAL_MS = 10.0                # runtime int8, one thread, batch 1, typical sentence

BACKPROP_LR = 3e-3      # the backprop models' Adam learning rate, chosen on the dev split like Zor's settings


def settings_for(quick: bool, vocab: int, hidden: Optional[int]) -> dict[str, Any]:
    """TranslationConfig keywords of the run (``--quick``: a tiny model; ``hidden`` None:
    TranslationConfig's width)."""
    if quick:
        return dict(source_vocab=200, target_vocab=200, hidden=32, window_dim=128, batch_size=64)
    width = {} if hidden is None else {"hidden": hidden}
    return dict(source_vocab=vocab, target_vocab=vocab, window_dim=1024, batch_size=256, **width)


def train_equal_time(models: dict[str, Any], budget: float, slice_s: float = 10.0,
                     show: bool = True) -> None:
    """Train every model of ``models`` (name → (fit(seconds) callable, history dict getter)) for ``budget`` s,
    in turns of ``slice_s`` seconds each."""
    bar = common.progress(int(budget * len(models)), "train (equal time)", show)
    while True:
        left = {name: budget - hist()["seconds"] for name, (_, hist) in models.items()}
        todo = [n for n, v in left.items() if v > 1e-3]
        if not todo:
            break
        for name in todo:
            fit, hist = models[name]
            before = hist()["seconds"]
            fit(min(slice_s, left[name]))
            bar.update(int(hist()["seconds"] - before))
    bar.close()


def typical(pairs, corpus, tokenizer, spread: float = 0.25, limit: int = 64, least: int = 8) -> tuple[list, float]:
    """Sentences of typical length, and the median source length (tokens) of the whole ``corpus``.

    The pairs of ``pairs`` whose source length lies within ±``spread`` of that median, in
    their order, at most ``limit``; when fewer than ``least`` do, the ``least`` pairs
    closest to the median instead.
    """
    med = float(np.median([len(tokenizer.encode(p.source)) for p in corpus]))
    lens = [len(tokenizer.encode(p.source)) for p in pairs]
    keep = [p for p, n in zip(pairs, lens) if abs(n - med) <= spread * med][:limit]
    if len(keep) < least:
        order = sorted(range(len(pairs)), key=lambda k: (abs(lens[k] - med), k))[:least]
        keep = [pairs[k] for k in sorted(order)]
    return keep, med


@dataclass
class Split:
    """One document split of a language pair, and the tokenizers and step data built on its training part."""

    splits: dict            # "train" / "dev" / "test" → pairs (zor.tasks.textdata.split_by_document)
    train: list             # the training pairs used (the first 1,500 with ``quick``)
    test: list              # the test pairs scored (the first ``max_test`` when given)
    cfg: Any                # TranslationConfig of the run
    spec: Any               # TranslationSpec: tokenizers and step encoding, from ``train``
    data: Any               # StepData of ``train``


def prepare_split(pair: str, seed: int, quick: bool, vocab: int, hidden: Optional[int], device: str = "cpu",
                  max_test: Optional[int] = None) -> Split:
    """Split ``pair`` by document with ``seed``, then build the run's config, spec and training steps."""
    from zor.tasks.textdata import load_pairs, split_by_document
    from zor.tasks.translation import TranslationConfig, build_spec, step_data

    splits = split_by_document(load_pairs(pair), dev=0.1, test=0.1, seed=seed)
    train = splits["train"][:1500] if quick else splits["train"]
    test = splits["test"] if max_test is None else splits["test"][:max_test]
    src_lang, tgt_lang = pair.split("-")
    cfg = TranslationConfig(source_language=src_lang, target_language=tgt_lang, seed=seed, device=device,
                            **settings_for(quick, vocab, hidden))
    spec = build_spec(train, cfg)
    return Split(splits, train, test, cfg, spec, step_data(train, spec, cfg.train_max_tokens))


METHOD_NAMES = ("zor", "zor-charges", "backprop", "backprop-mse", "backprop-sparse")


def train_methods(names: Sequence[str], sp: Split, budget: float, show: bool = True) -> dict[str, Any]:
    """The named methods (some of ``METHOD_NAMES``, see the module docstring) built for split ``sp`` and
    trained for ``budget`` s each with :func:`train_equal_time`; name → trained model."""
    from benchmarks.baselines.translation import BackpropStepModel
    from zor.tasks.translation import TranslationConfig, ZorTranslator

    cfg, spec, data = sp.cfg, sp.spec, sp.data

    def build(name: str) -> tuple[Any, Callable[[float], Any]]:
        if name in ("zor", "zor-charges"):
            c = cfg if name == "zor" else TranslationConfig(**{**cfg.to_dict(), "readout": "charges"})
            m = ZorTranslator(ZorTranslator.make_network(spec, c),
                              spec if name == "zor" else build_spec_like(spec, "probability"))
            return m, lambda s: m.fit(data, c, steps=10 ** 9, time_budget=s)
        if name not in METHOD_NAMES:
            raise ValueError(f"unknown method {name!r}: expected some of {', '.join(METHOD_NAMES)}")
        m = BackpropStepModel(spec, cfg.hidden, lr=BACKPROP_LR, seed=cfg.seed, device=cfg.device,
                              loss="mse" if name == "backprop-mse" else "ce",
                              sparse_input=name == "backprop-sparse")
        return m, lambda s: m.fit(data, 10 ** 9, cfg.batch_size, time_budget=s)

    built = {name: build(name) for name in names}
    train_equal_time({name: (fit, lambda m=m: m.history or {"seconds": 0.0}) for name, (m, fit) in built.items()},
                     budget, slice_s=min(10.0, budget), show=show)
    return {name: m for name, (m, _) in built.items()}


def run_pair(pair: str, budget: Any, quick: bool, vocab: int, hidden: Optional[int], beam: int, seed: int,
             max_test: Optional[int], workdir: Path, show: bool, device: str = "cpu",
             show_table: bool = True) -> dict[str, Any]:
    """One language pair end to end; ``budget`` is seconds, or a function of the training step count."""
    from benchmarks.baselines.text import TranslationMemory, copy_source
    from zor.tasks.textdata import split_summary

    t0 = time.perf_counter()
    sp = prepare_split(pair, seed, quick, vocab, hidden, device, max_test)
    splits, train, test, cfg, spec, data = sp.splits, sp.train, sp.test, sp.cfg, sp.spec, sp.data
    summary = split_summary(splits)
    dev = splits["dev"]
    prep_s = time.perf_counter() - t0
    budget = float(budget(len(data)) if callable(budget) else budget)
    sources, refs = [p.source for p in test], [p.target for p in test]
    rows: list[dict] = []

    # baselines without training
    rows.append(score_row("copy", copy_source(sources), refs, 0.0))
    t = time.perf_counter()
    tm = TranslationMemory([p.source for p in train], [p.target for p in train])
    tm_build = time.perf_counter() - t
    rows.append(score_row("tm", tm.translate(sources), refs, tm_build))

    # equal-time training
    trained = train_methods(METHOD_NAMES, sp, budget, show)
    zor = trained["zor"]
    engine_hyps: dict[str, list[str]] = {}
    for name, m in trained.items():
        t = time.perf_counter()
        hyps = m.translate(sources, beam=1)
        dec = time.perf_counter() - t
        engine_hyps[name] = hyps
        rows.append(score_row(name, hyps, refs, m.history["seconds"], steps=m.history["steps"], decode_s=dec,
                           beam=1, where="engine float32"))
        if beam > 1 and name in ("zor", "backprop", "backprop-sparse"):
            rows.append(score_row(f"{name} beam{beam}", m.translate(sources, beam=beam), refs, m.history["seconds"],
                               steps=m.history["steps"], beam=beam, where="engine float32"))

    if show_table:
        click.echo(f"\n{pair}: engine results after {budget:g} s of training each")
        click.echo(common.format_table(rows, _COLS))

    # export and the runtime: a failure here is reported, not fatal to the quality figures above
    ckpt = workdir / f"{pair}.zor"
    zor.save(ckpt)
    exports, runtime_rows, speeds, runtime_error = {}, [], [], None
    everything = [p for v in splits.values() for p in v]
    typ, med = typical(test, everything, spec.source_tokenizer, limit=16 if quick else 64)
    try:
        exports, runtime_rows, speeds = runtime_part(pair, ckpt, spec, cfg, dev, typ, sources, refs,
                                                      engine_hyps["zor"], workdir, seed)
    except ZorError as exc:
        runtime_error = f"{type(exc).__name__}: {exc}"
        click.echo(f"\n{pair}: export/runtime failed: {runtime_error}", err=True)

    by = {r["method"]: r for r in rows + runtime_rows}
    goals: dict[str, Any] = {"zor_chrf_ge_tm": by["zor"]["chrf"] >= by["tm"]["chrf"],
                             "zor_chrf_ge_backprop": by["zor"]["chrf"] >= by["backprop"]["chrf"],
                             "zor_chrf_ge_backprop_sparse": by["zor"]["chrf"] >= by["backprop-sparse"]["chrf"]}
    if runtime_error is None:
        int8_drop = by["zor runtime float32"]["chrf"] - by["zor runtime int8"]["chrf"]
        int8_b1 = next(s for s in speeds if s["model"] == "runtime int8" and s["batch"] == 1)
        goals.update({"int8_chrf_drop": int8_drop, "int8_within_budget": int8_drop <= GOAL_INT8_DROP,
                      "int8_batch1_ms": int8_b1["ms_per_sentence"],
                      "int8_batch1_within_10ms": int8_b1["ms_per_sentence"] <= GOAL_MS})
    return {
        "pair": pair, "splits": {k: {"pairs": v["pairs"], "documents": v["documents"] if k != "train" else
                                     len(v["documents"])} for k, v in summary.items()},
        "train_pairs_used": len(train), "train_steps": len(data), "test_sentences": len(test),
        "typical_source_tokens": med, "typical_sentences": len(typ),
        "typical_mean_source_tokens": float(np.mean([len(spec.source_tokenizer.encode(p.source)) for p in typ])),
        "model": {"sizes": zor.net.sizes, "input_width": spec.encoder.width, "length_ratio": spec.encoder.length_ratio,
                  "source_vocab": spec.source_tokenizer.vocab_size, "target_vocab": spec.target_tokenizer.vocab_size,
                  "config": cfg.to_dict(), "backprop_lr": BACKPROP_LR},
        "prep_s": prep_s, "budget_s": budget, "rows": rows, "runtime": runtime_rows, "exports": exports,
        "speed": speeds, "goals": goals, "runtime_error": runtime_error,
        "examples": [{"source": s, "reference": r, "zor": h} for s, r, h in
                     list(zip(sources, refs, engine_hyps["zor"]))[:5]],
    }


_COLS = ["method", "chrf", "chrf++", "bleu", "train_s", "steps", "beam", "where"]


def build_spec_like(spec, output: str):
    """The same spec with another output kind (the charges read-out scores probabilities)."""
    from zor.common.textdecode import TranslationSpec

    return TranslationSpec(spec.source_tokenizer, spec.target_tokenizer, spec.encoder, spec.source_language,
                           spec.target_language, spec.max_source_tokens, spec.max_target_tokens, output,
                           dict(spec.decoding))


def _print(result: dict) -> None:
    pair = result["pair"]
    click.echo(f"\n== {pair}: {result['splits']['train']['pairs']} train pairs ({result['train_pairs_used']} used, "
               f"{result['train_steps']:,} steps), {result['test_sentences']} test sentences from "
               f"{len(result['splits']['test']['documents'])} documents; equal training time "
               f"{result['budget_s']:g} s, one CPU thread ==")
    click.echo(common.format_table(result["rows"] + result["runtime"], _COLS))
    if result["runtime_error"]:
        click.echo(f"export/runtime failed: {result['runtime_error']}")
        return
    click.echo("\nRuntime speed (one thread; typical sentences: "
               f"{result['typical_sentences']} test sentences of {result['typical_mean_source_tokens']:.1f} source "
               f"tokens on average; corpus median {result['typical_source_tokens']:.0f}):")
    click.echo(common.format_table(result["speed"], ["model", "batch", "ms_per_sentence", "tokens_per_s",
                                                     "speedup_vs_engine"]))
    g = result["goals"]
    click.echo(f"\nGoals: zor chrF ≥ tm: {g['zor_chrf_ge_tm']}; zor chrF ≥ backprop: {g['zor_chrf_ge_backprop']} "
               f"(≥ backprop on the same sparse batches: {g.get('zor_chrf_ge_backprop_sparse')}); "
               f"int8 − float32 chrF drop {g['int8_chrf_drop']:.2f} (≤ {GOAL_INT8_DROP}: {g['int8_within_budget']}); "
               f"int8 batch-1 {g['int8_batch1_ms']:.2f} ms/sentence (≤ {GOAL_MS:g}: {g['int8_batch1_within_10ms']})")


@common.command
@click.option("--pairs", default="es-nah,es-oto", show_default=True, help="Language pairs, comma-separated.")
@click.option("--budget", type=click.FloatRange(min=0.1), default=240.0, show_default=True,
              help="Training seconds per method for es-nah; a smaller pair gets it times its share of "
                   "es-nah's training steps (when es-nah runs first).")
@click.option("--vocab", type=click.IntRange(min=50), default=1000, show_default=True, help="Subword vocabulary a side.")
@click.option("--hidden", type=click.IntRange(min=4), default=None,
              help="Hidden width H (default: TranslationConfig's, 512).")
@click.option("--beam", type=click.IntRange(min=1), default=4, show_default=True, help="Beam width (1: greedy only).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the document split and the models.")
@click.option("--max-test", type=click.IntRange(min=1), default=None, help="Score only the first N test sentences.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where the models train (export, runtime and speed figures are always CPU).")
@click.option("--quick", is_flag=True, help="Smoke test: tiny models, 1,500 training pairs, 1 s budgets.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Keep the checkpoints and ONNX files in this existing folder (default: a temporary one).")
@click.option("--no-progress", is_flag=True)
def main(pairs: str, budget: float, vocab: int, hidden: Optional[int], beam: int, seed: int, max_test: Optional[int],
         threads: int, device: str, quick: bool, json_path: Optional[Path], out_dir: Optional[Path],
         no_progress: bool) -> None:
    """Translation benchmark: Zor vs translation memory, copy-source and equal-size backprop."""
    from zor.tasks.textdata import LANGUAGE_PAIRS

    names = [p.strip() for p in pairs.split(",") if p.strip()]
    bad = [p for p in names if p not in LANGUAGE_PAIRS]
    if not names or bad:
        raise click.UsageError(f"--pairs: expected some of {', '.join(LANGUAGE_PAIRS)}, got {pairs!r}")
    common.check_json_folder(json_path)
    if out_dir is not None and not out_dir.is_dir():
        raise click.UsageError(f"--out {out_dir}: expected an existing folder")
    try:
        import elotl  # noqa: F401
        import sacrebleu  # noqa: F401
    except ImportError as exc:
        raise click.UsageError(f"this benchmark needs the 'translate' extra (elotl, sacrebleu): {exc}") from None
    common.set_threads(threads)
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise click.UsageError("--device cuda: torch sees no CUDA GPU on this machine")
    if quick:
        budget, max_test, beam = 1.0, max_test or 40, min(beam, 2)
    results = []
    reference: dict[str, int] = {}

    def budget_for(steps: int) -> float:
        if quick or "es-nah" not in reference:
            return budget
        return budget * min(1.0, steps / reference["es-nah"])

    def write(results: list) -> None:
        if json_path is not None:
            common.write_json(json_path, {"benchmark": "translation", "quick": quick,
                                          "environment": common.environment(threads), "device": device,
                                          "gpu": _gpu_note(device), "pairs": results})

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) if out_dir is None else out_dir
        for pair in sorted(names, key=lambda p: p != "es-nah"):          # es-nah first: the reference size
            res = run_pair(pair, budget_for, quick, vocab, hidden, beam, seed, max_test, workdir,
                           not no_progress, device)
            reference.setdefault(pair, res["train_steps"])
            results.append(res)
            _print(res)
            write(results)                                              # after every pair
    if json_path is not None:
        click.echo(f"\nwrote {json_path}")


def _gpu_note(device: str) -> str:
    import torch

    if device == "cuda":
        return f"trained on {torch.cuda.get_device_name(0)}"
    if torch.cuda.is_available():
        return f"CUDA present ({torch.cuda.get_device_name(0)}) but trained on the CPU: pass --device cuda"
    return "no GPU on this machine: training times are CPU only"


if __name__ == "__main__":
    main()
