"""What the load-time weight check costs: ``Model(path)`` against ``Model(path, check_weights=False)``.

Every load checks the file before onnxruntime sees it (:mod:`zor.runtime.loaders`): the graph's
operators, the graph's external-data entries against the metadata, and (the part
``check_weights=False`` turns off) the SHA-256 of every tensor as the file holds it
(``zor.integrity``), external weights read and checked by the runtime and handed to
onnxruntime in memory. This benchmark builds two models and times both loads side by side
(interleaved rounds, medians; the files are in the page cache after the first round):

- the demo's few-shot model, 784-64-784 (sigmoid output), weights inline;
- a sparse model of about 700 MB of float32 weights, 8192-8192-8192-5120, with
  ``--external-weights``, loaded (``weights="load"``) and opened for rows (``weights="rows"``);
  and, in rows mode, the cost per call of the row checks (CRC-32 at a row's first read).

The big model is written to a temporary folder and removed afterwards. Run
``python -m benchmarks.load_check`` (``--json PATH`` to keep the figures, ``--small`` for
a 2048-wide stand-in of the big model).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import click
import numpy as np

from benchmarks import common

BIG = (8192, 8192, 8192, 5120)          # 4·(8192² + 8192² + 8192·5120) = 704,643,072 bytes of float32 weights
SMALL_BIG = (2048, 2048, 2048, 1280)


def _load_time(path: Path, check: bool, **kw: Any) -> float:
    from zor.runtime import Model

    start = time.perf_counter()
    Model(path, device="generic", threads=1, check_weights=check, **kw)
    return time.perf_counter() - start


def _pair(name: str, path: Path, rounds: int, weights_bytes: int, **kw: Any) -> dict[str, Any]:
    """Median load seconds with and without the check, over interleaved rounds (one warm-up first)."""
    measures: dict[str, Callable[[], float]] = {
        "checked": lambda: _load_time(path, True, **kw),
        "unchecked": lambda: _load_time(path, False, **kw),
    }
    for fn in measures.values():
        fn()
    got = common.interleave(measures, rounds)
    on, off = common.median(got["checked"]), common.median(got["unchecked"])
    return {"model": name, "weights_mb": weights_bytes / 1e6, "checked_s": on, "unchecked_s": off,
            "extra_s": on - off, "ratio": on / off, "rounds": rounds}


def _export_fewshot(folder: Path) -> Path:
    from zor.export import export

    from zor import Layer, Zor

    net = Zor([Layer(784, threshold=0.5), Layer(64, threshold=0.2), Layer(784, activation_function="sigmoid")],
              seed=0, device="cpu")
    export(net, folder / "fewshot.onnx")
    return folder / "fewshot.onnx"


def _export_big(folder: Path, sizes: tuple[int, ...]) -> Path:
    from zor.export import export

    from zor import Layer, Zor

    layers = [Layer(n, threshold=0.9) for n in sizes[:-1]] + [Layer(sizes[-1])]
    net = Zor(layers, seed=0, device="cpu")
    calib = np.random.default_rng(0).random((8, sizes[0]), dtype=np.float32)
    export(net, folder / "big.onnx", path="sparse", max_batch=4, external_weights=True, verify_model=False,
           calibration=calib)
    return folder / "big.onnx"


def _rows_crc_cost(path: Path, width: int, rounds: int) -> dict[str, Any]:
    """Seconds per call in rows mode as shipped (each row's CRC-32 checked when first read, the file's
    stamp on every call), against the same calls with the CRC tables dropped, on inputs where about
    10 % of the input units spike."""
    from zor.runtime import Model

    checked = Model(path, device="generic", threads=1, weights="rows")
    bare = Model(path, device="generic", threads=1, weights="rows")
    x = np.random.default_rng(1).random((1, width), dtype=np.float32)
    bare.run(x)
    bare._weightfile._crc = {name: None for name in bare._weightfile._crc}    # no CRC for the benchmark's copy

    def per_call(model: Any) -> Callable[[], float]:
        def fn() -> float:
            start = time.perf_counter()
            for _ in range(5):
                model.run(x)
            return (time.perf_counter() - start) / 5
        return fn

    got = common.interleave({"crc": per_call(checked), "none": per_call(bare)}, rounds)
    on, off = common.median(got["crc"]), common.median(got["none"])
    return {"rows_call_crc_s": on, "rows_call_no_crc_s": off, "rows_crc_ratio": on / off}


@common.command
@click.option("--rounds", default=5, help="interleaved rounds per model")
@click.option("--small", is_flag=True, help="a 2048-wide stand-in for the 700 MB model (quick runs)")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default="load_check.json",
              help="write the figures here (\"\" for none)")
def main(rounds: int, small: bool, json_path: Optional[str]) -> None:
    """Print the load time with and without the weight check, and write it as JSON."""
    common.set_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="zor-load-check-"))
    try:
        rows = []
        few = _export_fewshot(folder)
        rows.append(_pair("few-shot 784-64-784 (inline)", few, rounds * 4, 4 * (784 * 64 + 64 * 784)))
        sizes = SMALL_BIG if small else BIG
        big = _export_big(folder, sizes)
        nbytes = 4 * sum(a * b for a, b in zip(sizes, sizes[1:]))
        label = "-".join(map(str, sizes))
        rows.append(_pair(f"sparse {label} (external, load)", big, rounds, nbytes, weights="load"))
        rows.append(_pair(f"sparse {label} (external, rows)", big, rounds, nbytes, weights="rows"))
        crc = _rows_crc_cost(big, sizes[0], rounds * 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(common.format_table(rows, ["model", "weights_mb", "checked_s", "unchecked_s", "extra_s", "ratio"],
                              digits={"weights_mb": 1, "checked_s": 4, "unchecked_s": 4, "extra_s": 4, "ratio": 2}))
    print(f"rows mode, one call at ~10 % activity: {crc['rows_call_crc_s'] * 1e3:.2f} ms with rows CRC-checked when "
          f"first read, {crc['rows_call_no_crc_s'] * 1e3:.2f} ms without ({crc['rows_crc_ratio']:.2f}×)")
    if json_path:
        common.write_json(json_path, {"environment": common.environment(1), "rows": rows, "rows_crc": crc})


if __name__ == "__main__":
    main()
