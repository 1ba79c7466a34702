"""Translation quality over several document splits: how much of a gap is the split?

Usage (from the repository root):
    python -m benchmarks.translation_seeds [--pair es-nah] [--seeds 0,1,2,3] [--budget 240] [--json PATH] [--quick]
    python -m benchmarks.translation_seeds --pool run1.json --pool run2.json ...   # runs taken together

``python -m benchmarks.translation`` measures one split (``--seed``, default 0). Its test set
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

One run is one sample per split, and runs differ by up to a point. ``--pool`` takes
the ``--json`` files of several runs together (nothing is trained): the mean chrF of
each method per split, and over every split-run the gaps zor − backprop and zor −
backprop-sparse with their mean and how many are ahead, level (within 0.05) or behind.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import click

from benchmarks import common
from benchmarks.translation import prepare_split, train_methods
from benchmarks.translation_runtime import score_row

__all__ = ["run_split", "summarise", "read_runs", "pool", "main"]

TRAINED = ("zor", "backprop", "backprop-sparse")
BACKPROP = ("backprop", "backprop-sparse")
LEVEL = 0.05      # chrF points: a gap smaller than this counts as level when pooling runs


def run_split(pair: str, seed: int, budget: float, quick: bool, vocab: int, hidden: Optional[int],
              show: bool = True) -> dict[str, Any]:
    """One document split: train the methods for ``budget`` s each, score them on its test set."""
    from benchmarks.baselines.text import TranslationMemory, copy_source

    sp = prepare_split(pair, seed, quick, vocab, hidden, max_test=40 if quick else None)
    sources, refs = [p.source for p in sp.test], [p.target for p in sp.test]
    trained = train_methods(TRAINED, sp, budget, show)
    rows = [score_row("copy", copy_source(sources), refs),
            score_row("tm", TranslationMemory([p.source for p in sp.train],
                                           [p.target for p in sp.train]).translate(sources), refs)]
    for name, m in trained.items():
        t = time.perf_counter()
        hyps = m.translate(sources, beam=1)
        rows.append(score_row(name, hyps, refs, m.history["seconds"], steps=m.history["steps"],
                           decode_s=time.perf_counter() - t))
    return {"pair": pair, "seed": seed, "budget_s": budget, "train_pairs": len(sp.train),
            "test_sentences": len(sp.test), "test_documents": sorted({p.document for p in sp.test}), "rows": rows}


def summarise(runs: list[dict]) -> dict[str, Any]:
    """Median chrF per method over the splits, and per split the gap zor − best backprop (chrF points)."""
    per_method = common.summarise([row for run in runs for row in run["rows"]], ("method",), ("chrf",),
                                  count="splits")
    median = {s["method"]: s["chrf"] for s in per_method}
    gaps = []
    for run in runs:
        at = {row["method"]: row["chrf"] for row in run["rows"]}
        best = max(BACKPROP, key=lambda m: at[m])
        gaps.append({"seed": run["seed"], "zor": at["zor"], "best_backprop": best, "backprop": at[best],
                     "gap": at["zor"] - at[best], "zor_vs_tm": at["zor"] - at["tm"]})
    return {"median_chrf": median, "gaps": gaps, "median_gap": common.median(g["gap"] for g in gaps),
            "zor_ahead_splits": sum(g["gap"] >= 0 for g in gaps), "splits": len(gaps)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_runs(path: Path) -> list[dict]:
    """The split runs of one ``--json`` file of this benchmark (a :class:`click.UsageError` otherwise)."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.UsageError(f"--pool: expected a JSON file written by this benchmark, got {path} ({exc})") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or data.get("benchmark") != "translation_seeds" or not isinstance(runs, list)
            or not runs):
        raise click.UsageError(f"--pool: expected the JSON of a translation_seeds run (benchmark "
                               f"'translation_seeds', a non-empty 'runs' list), got {path}")
    for k, entry in enumerate(runs):
        run = entry if isinstance(entry, dict) else {}
        rows = run.get("rows") if isinstance(run.get("rows"), list) else []
        methods = [r.get("method") for r in rows if isinstance(r, dict) and _is_number(r.get("chrf"))]
        if "seed" not in run or any(m not in methods for m in TRAINED):
            raise click.UsageError(f"--pool: {path}: expected each run to have a seed and rows with a chrF "
                                   f"number for {', '.join(TRAINED)}, got run {k} with methods {methods}")
    if data.get("quick"):
        raise click.UsageError(f"--pool: {path} is a --quick smoke run; pool full runs only")
    return runs


def pool(runs: list[dict]) -> dict[str, Any]:
    """Several runs of the same splits taken together (one entry per split-run in ``runs``).

    Per split: how many runs, and the mean chrF of each method over them. Per backprop
    model b: the gaps zor − b of every split-run, their mean, and how many are ahead
    (gap ≥ +LEVEL), level (|gap| < LEVEL) and behind (gap ≤ −LEVEL).
    """
    pairs = {run.get("pair") for run in runs}
    if len(pairs) > 1:
        raise click.UsageError(f"--pool: expected runs of one language pair, got {', '.join(sorted(map(str, pairs)))}")
    chrf = [{row["method"]: float(row["chrf"]) for row in run["rows"]} for run in runs]
    methods = [m for m in chrf[0] if all(m in c for c in chrf)]
    splits: dict[int, list[dict]] = {}
    for run, c in zip(runs, chrf):
        splits.setdefault(int(run["seed"]), []).append(c)
    per_split = [{"split": seed, "runs": len(cs), **{m: sum(c[m] for c in cs) / len(cs) for m in methods}}
                 for seed, cs in sorted(splits.items())]
    versus = {}
    for b in BACKPROP:
        gaps = [c["zor"] - c[b] for c in chrf]
        versus[b] = {"gaps": gaps, "mean_gap": sum(gaps) / len(gaps),
                     "ahead": sum(g >= LEVEL for g in gaps), "level": sum(abs(g) < LEVEL for g in gaps),
                     "behind": sum(g <= -LEVEL for g in gaps)}
    overall = {m: sum(c[m] for c in chrf) / len(chrf) for m in methods}
    return {"split_runs": len(runs), "per_split": per_split, "mean_chrf": overall, "versus": versus}


def show_pool(p: dict[str, Any]) -> None:
    cols = ["split", "runs", "copy", "tm", *TRAINED]
    click.echo(f"test chrF per document split, mean over runs ({p['split_runs']} split-runs in all)")
    click.echo(common.format_table(p["per_split"] + [{"split": "mean", "runs": p["split_runs"], **p["mean_chrf"]}],
                                   cols))
    for b, v in p["versus"].items():
        click.echo(f"zor − {b}: mean {v['mean_gap']:+.2f} chrF; ahead on {v['ahead']}, level (±{LEVEL}) on "
                   f"{v['level']}, behind on {v['behind']} of {len(v['gaps'])} split-runs")


@common.command
@click.option("--pair", default="es-nah", show_default=True, help="Language pair (zor.tasks.textdata.LANGUAGE_PAIRS).")
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
@click.option("--pool", "pool_paths", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Train nothing: take the --json files of earlier runs together (repeat the option) and print "
                   "the mean per split and the gaps to each backprop model over every split-run.")
def main(pair: str, seeds_text: str, budget: float, vocab: int, hidden: Optional[int], threads: int, quick: bool,
         json_path: Optional[Path], no_progress: bool, pool_paths: tuple[Path, ...]) -> None:
    """Zor vs backprop translation chrF over several document splits."""
    from zor.tasks.textdata import LANGUAGE_PAIRS

    if pool_paths:
        common.check_json_folder(json_path)
        pooled = pool([run for path in pool_paths for run in read_runs(path)])
        show_pool(pooled)
        if json_path is not None:
            common.write_json(json_path, {"benchmark": "translation_seeds_pool",
                                          "files": [p.name for p in pool_paths], "pool": pooled})
            click.echo(f"wrote {json_path}", err=True)
        return

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
