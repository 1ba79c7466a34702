"""Spanish → Nahuatl (or Otomí) with Zor, end to end: train, export, translate on the runtime.

    python examples/translate.py --out out/translate [--pair es-nah|es-oto] [--budget 120] [--quick]

1. loads the parallel corpus through ``elotl`` (``pip install elotl``; the texts are
   never copied into this repository) and splits it by document (``zor.tasks.textdata``);
2. trains subword tokenizers on the training split and a Zor step model with Zor's
   rule for ``--budget`` seconds (``zor.tasks.translation``: the network predicts the next
   target subword from a fixed-size encoding of the source and the last target tokens);
3. scores it on the test documents (chrF, chrF++, BLEU with sacrebleu);
4. saves the checkpoint: its ``task`` carries the tokenizers and the feature spec;
5. exports it with ``zor.export.export`` (what ``zor-export`` runs) through
   ``benchmarks.translation.export_translation``: float32, verified against the engine
   on real step inputs, and int8;
6. translates with the torch-free runtime (``zor.runtime.tasks.translate``), greedy and beam,
   and times it at batch 1 on one thread.

Only the flag ``--pair`` changes between language pairs. ``--quick`` is a smoke run of
a few seconds (a tiny model on 1,500 pairs: its translations are poor).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))     # the repo root holds `benchmarks`
from benchmarks.translation import export_translation  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="Folder for the checkpoint and the ONNX files.")
    ap.add_argument("--pair", default="es-nah", help="Language pair: es-nah, es-oto, es-mix (and the reverses).")
    ap.add_argument("--budget", type=float, default=120.0, help="Training seconds.")
    ap.add_argument("--seed", type=int, default=0, help="Seed of the document split and the training.")
    ap.add_argument("--quick", action="store_true", help="Smoke run: a tiny model, 1,500 pairs, 3 s.")
    args = ap.parse_args(argv)
    if not args.out.parent.is_dir():
        ap.error(f"--out {args.out}: its parent folder does not exist")
    args.out.mkdir(exist_ok=True)

    import torch
    from zor.runtime import Model
    from zor.runtime.tasks import Translator, speed

    from zor.common.errors import ZorError
    from zor.common.fileio import write_text_atomic
    from zor.common.textmetrics import score
    from zor.tasks.textdata import load_pairs, split_by_document
    from zor.tasks.translation import (
        TranslationConfig,
        ZorTranslator,
        build_spec,
        step_data,
    )

    torch.set_num_threads(1)
    try:
        splits = split_by_document(load_pairs(args.pair), seed=args.seed)
    except ZorError as exc:
        ap.error(str(exc))
    train, dev, test = splits["train"], splits["dev"], splits["test"][: 40 if args.quick else 400]
    if args.quick:
        train = train[:1500]
    src, tgt = args.pair.split("-")
    size = dict(source_vocab=200, target_vocab=200, hidden=32, window_dim=128, batch_size=64) if args.quick else {}
    cfg = TranslationConfig(source_language=src, target_language=tgt, steps=10 ** 9, time_budget=3.0 if args.quick else args.budget,
                            seed=args.seed, device="auto", **size)
    print(f"{args.pair}: {len(train)} training pairs, {len(test)} test sentences "
          f"({len({p.document for p in test})} held-out documents)")
    t = time.perf_counter()
    spec = build_spec(train, cfg)
    data = step_data(train, spec, cfg.train_max_tokens)
    print(f"tokenizers ({spec.source_tokenizer.vocab_size}/{spec.target_tokenizer.vocab_size} subwords) and "
          f"{len(data):,} training steps in {time.perf_counter() - t:.1f} s")
    model = ZorTranslator.train(train, cfg, spec=spec, data=data)
    print(f"trained {model.net.sizes} with Zor's rule: {model.history['steps']} batches in "
          f"{model.history['seconds']:.1f} s on {model.history['device']}")
    hyps = model.translate([p.source for p in test])
    print("test:", {k: round(v, 2) for k, v in score(hyps, [p.target for p in test]).items()})

    ckpt = args.out / f"{args.pair}.zor"
    model.save(ckpt)
    cal = step_data(dev, spec, cfg.train_max_tokens)
    rows = spec.encoder.dense(cal, np.sort(np.random.default_rng(0).choice(len(cal), min(512, len(cal)), False)))
    files = {}
    for precision, mode in (("float32", "none"), ("int8", "int8")):   # summary.json keys the files by precision
        out = args.out / f"{args.pair}-{precision}.onnx"
        res = export_translation(ckpt, out, mode, rows)      # zor.export.export, verified (see its docstring)
        files[precision] = out
        print(f"exported {out.name}: {res['bytes'] / 1e6:.2f} MB, verified: {res['verification_passed']} "
              f"({res['check']})")

    runtime = Translator(Model(files["int8"], threads=1))
    for p in test[:3]:
        print(f"\n  es : {p.source}\n  ref: {p.target}\n  int8 greedy: {runtime.translate(p.source)}"
              f"\n  int8 beam 4 : {runtime.translate(p.source, beam=4)}")
    rt_hyps = runtime.translate([p.source for p in test])
    print("\nruntime int8 test:", {k: round(v, 2) for k, v in score(rt_hyps, [p.target for p in test]).items()})
    fig = speed(runtime.model, [p.source for p in test[:16]], batch_size=1, repeats=2)
    print(f"runtime int8, one thread, batch 1: {fig['ms_per_sentence']:.2f} ms/sentence, "
          f"{fig['tokens_per_s']:.0f} target tokens/s")
    write_text_atomic(args.out / "summary.json", json.dumps(
        {"pair": args.pair, "checkpoint": ckpt.name, "files": {k: v.name for k, v in files.items()},
         "speed": {k: v for k, v in fig.items() if k != "seconds"}}, indent=2) + "\n")
    print(f"wrote {args.out}/ ({ckpt.name}, {files['float32'].name}, {files['int8'].name}, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
