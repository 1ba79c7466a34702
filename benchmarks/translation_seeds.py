"""Translation quality over several document splits: how much of a gap is the split?

    .venv/bin/python benchmarks/translation_seeds.py [--pair es-nah] [--seeds 0,1,2,3] [--budget 240]
        [--json PATH] [--quick]

``benchmarks/translation.py`` measures one split (``--seed``, default 0). Its test set
is a handful of documents, so one split can favour one method by more than the gap
being measured. This benchmark repeats the quality part of that run on several
splits: for each seed s, ``split_by_document(seed=s)`` (other test documents), the
tokenizers and step data of that split, and

    zor              Zor [D, H, V] trained by Zor's rule, softmax read-out
    backprop         the equal-size ReLU MLP, Adam, cross-entropy, dense batches
    backprop-sparse  the same MLP on the same sparse batches as Zor
    tm, copy         translation memory and copy-source (no training)

trained for the same wall time (``--budget`` s each, interleaved 10-second slices,
one thread) with the settings of ``benchmarks/translation.py`` and scored greedily
(chrF, chrF++, BLEU; sacrebleu) on that split's test sentences. Printed: chrF per
seed, the median over seeds, and per seed the gap zor − best backprop. No export or
runtime part: those are measured by ``benchmarks/translation.py``.

Measured at H = 512 (es-nah, ``--seeds 0,1,2,3``, 240 s each, one thread, two runs of
two processes side by side, seeds 0,1 and 2,3; test chrF, greedy):

    split (test docs)  copy   tm     zor           backprop      backprop-sparse  gap
    0 (3)              26.31  19.98  25.65  25.82  25.32  26.17  26.21  25.95    −0.56  −0.35
    1 (2)              16.24  13.55  20.53  20.54  20.21  19.97  19.94  20.54    +0.32  −0.00
    2 (2)              16.06  14.99  22.68  22.34  21.67  22.37  22.16  22.17    +0.53  −0.03
    3 (9)              19.40  25.63  29.07  29.20  28.27  28.50  28.74  28.68    +0.33  +0.52

Zor is ahead of the better backprop model on 4 of the 8 split-runs, level (within
0.03) on 2 and behind on split 0 in both runs; the median gap is +0.16 chrF. Zor did
7,200-8,800 steps in the time, backprop 4,200-5,000 and backprop-sparse 4,900-6,400.

At the former width H = 256 (``--hidden 256``) Zor trailed on 11 of 12 split-runs over
three runs: gaps −0.94 / −0.80 / −1.20 / −0.77 (median −0.87), −0.41 / −0.73 / −0.38 /
+0.31 (median −0.40) and −0.42 / −0.13 / −0.37 / −1.03, with Zor at 25.7 / 20.4 /
22.3 / 28.7 in the first run (14,400-15,600 steps).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import click

from benchmarks import common
from benchmarks.translation import _score, prepare_split, train_methods

__all__ = ["run_split", "summarise", "main"]

TRAINED = ("zor", "backprop", "backprop-sparse")
BACKPROP = ("backprop", "backprop-sparse")


def run_split(pair: str, seed: int, budget: float, quick: bool, vocab: int, hidden: Optional[int],
              show: bool = True) -> dict[str, Any]:
    """One document split: train the methods for ``budget`` s each, score them on its test set."""
    from zor.textbaselines import TranslationMemory, copy_source

    sp = prepare_split(pair, seed, quick, vocab, hidden, max_test=40 if quick else None)
    sources, refs = [p.source for p in sp.test], [p.target for p in sp.test]
    trained = train_methods(TRAINED, sp, budget, show)
    rows = [_score("copy", copy_source(sources), refs),
            _score("tm", TranslationMemory([p.source for p in sp.train],
                                           [p.target for p in sp.train]).translate(sources), refs)]
    for name, m in trained.items():
        t = time.perf_counter()
        hyps = m.translate(sources, beam=1)
        rows.append(_score(name, hyps, refs, m.history["seconds"], steps=m.history["steps"],
                           decode_s=time.perf_counter() - t))
    return {"pair": pair, "seed": seed, "budget_s": budget, "train_pairs": len(sp.train),
            "test_sentences": len(sp.test), "test_documents": sorted({p.document for p in sp.test}), "rows": rows}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Median chrF per method over the splits, and per split the gap zor − best backprop (chrF points)."""
    methods = [r["method"] for r in runs[0]["rows"]]
    median = {m: common.median(row["chrf"] for run in runs for row in run["rows"] if row["method"] == m)
              for m in methods}
    gaps = []
    for run in runs:
        at = {row["method"]: row["chrf"] for row in run["rows"]}
        best = max(BACKPROP, key=lambda m: at[m])
        gaps.append({"seed": run["seed"], "zor": at["zor"], "best_backprop": best, "backprop": at[best],
                     "gap": at["zor"] - at[best], "zor_vs_tm": at["zor"] - at["tm"]})
    return {"median_chrf": median, "gaps": gaps, "median_gap": common.median(g["gap"] for g in gaps),
            "zor_ahead_splits": sum(g["gap"] >= 0 for g in gaps), "splits": len(gaps)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--pair", default="es-nah", show_default=True, help="Language pair (zor.textdata.LANGUAGE_PAIRS).")
@click.option("--seeds", "seeds_text", default="0,1,2,3", show_default=True,
              help="Split seeds, comma-separated (each its own test documents).")
@click.option("--budget", type=click.FloatRange(min=0.1), default=240.0, show_default=True,
              help="Seconds of training per method and split.")
@click.option("--vocab", type=click.IntRange(min=50), default=1000, show_default=True)
@click.option("--hidden", type=click.IntRange(min=4), default=None,
              help="Hidden width H (default: TranslationConfig's, 512).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--quick", is_flag=True, help="Smoke test: tiny models, 1,500 training pairs, 40 test sentences.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--no-progress", is_flag=True)
def main(pair: str, seeds_text: str, budget: float, vocab: int, hidden: Optional[int], threads: int, quick: bool,
         json_path: Optional[Path], no_progress: bool) -> None:
    """Zor vs backprop translation chrF over several document splits."""
    from zor.errors import ZorError
    from zor.textdata import LANGUAGE_PAIRS

    if pair not in LANGUAGE_PAIRS:
        raise click.UsageError(f"--pair: expected one of {', '.join(LANGUAGE_PAIRS)}, got {pair!r}")
    try:
        seeds = [int(v) for v in seeds_text.split(",") if v.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise click.UsageError(f"--seeds: expected distinct comma-separated integers ≥ 0 like 0,1,2, got {seeds_text!r}")
    common.check_json_folder(json_path)
    try:
        import elotl  # noqa: F401
        import sacrebleu  # noqa: F401
    except ImportError as exc:
        raise click.UsageError(f"this benchmark needs the 'translate' extra (elotl, sacrebleu): {exc}") from None
    common.set_threads(threads)
    if quick:
        budget = min(budget, 1.0)
    runs: list[dict] = []
    try:
        for seed in seeds:
            runs.append(run_split(pair, seed, budget, quick, vocab, hidden, show=not no_progress))
            at = {r["method"]: r["chrf"] for r in runs[-1]["rows"]}
            click.echo(f"split {seed}: {runs[-1]['test_sentences']} test sentences from "
                       f"{len(runs[-1]['test_documents'])} documents; chrF "
                       + ", ".join(f"{m} {v:.2f}" for m, v in at.items()))
            if json_path is not None:                                      # after every split
                common.write_json(json_path, {"benchmark": "translation_seeds", "quick": quick,
                                              "environment": common.environment(threads), "runs": runs,
                                              "summary": summarise(runs)})
    except ZorError as exc:
        raise click.ClickException(str(exc)) from None
    s = summarise(runs)
    table = [{"split": g["seed"], **{r["method"]: r["chrf"] for r in run["rows"]}, "gap": g["gap"]}
             for g, run in zip(s["gaps"], runs)]
    table.append({"split": "median", **s["median_chrf"], "gap": s["median_gap"]})
    cols = ["split", "copy", "tm", *TRAINED, "gap"]
    click.echo(f"\n{pair}: test chrF per document split, {budget:g} s of training each, greedy; "
               "gap = zor − best backprop")
    click.echo(common.format_table(table, cols))
    click.echo(f"zor ≥ best backprop on {s['zor_ahead_splits']} of {s['splits']} splits; median gap "
               f"{s['median_gap']:+.2f} chrF")
    if json_path is not None:
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":
    main()
