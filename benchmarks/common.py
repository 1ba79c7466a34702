"""Helpers the benchmark scripts share: threads and seeds, timing, data, tables, JSON.

Speed figures on these shared machines are noisy: :func:`time_runs` reports the
median of several runs, and scripts compare methods measured in the same run.

Example:
    >>> print(format_table([{"method": "a", "psnr": 13.456}], ["method", "psnr"]))
    method  psnr
    ------  -----
    a       13.46
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

__all__ = [
    "set_threads",
    "seed_everything",
    "median",
    "paired_ratio",
    "time_runs",
    "format_value",
    "format_table",
    "to_jsonable",
    "write_json",
    "environment",
    "load_images",
    "balanced_subset",
    "progress",
    "parse_int_list",
]


def set_threads(n: int) -> None:
    """Use n CPU threads in torch (and tell BLAS libraries started later)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def median(values: Iterable[float]) -> float:
    """Median of the finite values (nan when there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else float("nan")


def paired_ratio(reference: list[float], other: list[float]) -> float:
    """Median over rounds of reference_k / other_k: a speed-up from figures taken side by side.

    On a shared machine the speed of memory drifts between rounds; both figures of a
    round see the same drift, so their ratio varies less than the ratio of the medians.
    E.g. rounds (5, 0.5), (6, 0.55), (4, 0.45) → median(10, 10.9, 8.9) = 10.
    """
    if len(reference) != len(other) or not reference:
        raise ValueError(f"expected two equally long, non-empty lists of rounds, got {len(reference)} and {len(other)}")
    return float(np.median(np.asarray(reference, float) / np.asarray(other, float)))


def time_runs(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1,
              sync: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Wall time of ``fn()``: {"median", "min", "max", "runs"} in seconds over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        runs.append(time.perf_counter() - start)
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def format_value(value: Any, digits: int = 2) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str], headers: Optional[Sequence[str]] = None,
                 digits: Union[int, dict] = 2) -> str:
    """A fixed-width text table of ``rows`` (dicts) in the given column order."""
    headers = list(headers or columns)
    def dig(c: str) -> int:
        return digits.get(c, 2) if isinstance(digits, dict) else digits
    cells = [[format_value(r.get(c), dig(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]
    line = lambda parts: "  ".join(p.ljust(w) for p, w in zip(parts, widths)).rstrip()  # noqa: E731
    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars and arrays unwrapped, non-finite floats as null."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Union[str, os.PathLike], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (``zor.common.fileio``)."""
    from zor.common.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


def environment(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # shared-machine noise
    }
    try:
        import zor

        env["zor"] = zor.__version__
    except ImportError:  # pragma: no cover
        pass
    return env


def load_images(bundled: bool = False) -> dict[str, Any]:
    """Fashion-MNIST {"train": (x, y), "test": (x, y), "source": ...}.

    The full set when it is on this machine (``zor.tasks.datasets.find_fashion_mnist``),
    else (or with ``bundled=True``) the 700-image subset shipped in the package.
    """
    from zor.common.errors import DataNotFoundError
    from zor.tasks import datasets

    if not bundled:
        try:
            return {"train": datasets.load_fashion_mnist("train"), "test": datasets.load_fashion_mnist("test"),
                    "source": "fashion-mnist"}
        except DataNotFoundError as exc:
            print(f"note: {exc}\nnote: using the bundled 700-image subset instead", file=sys.stderr)
    return {"train": datasets.load_bundled("train"), "test": datasets.load_bundled("test"),
            "source": "bundled subset"}


def balanced_subset(labels: np.ndarray, n: int, seed: int, n_classes: int = 10) -> np.ndarray:
    """Indices of n training samples, n / n_classes from each class, drawn with ``seed``.

    n equal to the whole set returns every index (in order).
    """
    from zor.common.errors import ConfigError, DataError

    labels = np.asarray(labels)
    if n == len(labels):
        return np.arange(n)
    if n <= 0 or n % n_classes:
        raise ConfigError(f"a balanced subset needs a positive multiple of {n_classes} samples, got {n}")
    rng = np.random.default_rng(seed)
    per = n // n_classes
    idx = []
    for c in range(n_classes):
        found = np.flatnonzero(labels == c)
        if len(found) < per:
            raise DataError(f"class {c} has {len(found)} samples, {per} needed for a subset of {n}")
        idx.append(np.sort(rng.choice(found, size=per, replace=False)))
    return np.concatenate(idx)


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on stderr (or a no-op object when disabled or tqdm is missing)."""
    class _Null:
        def update(self, n: int = 1) -> None: ...
        def set_postfix_str(self, s: str) -> None: ...
        def close(self) -> None: ...

    if not enabled:
        return _Null()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return _Null()
    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def parse_int_list(text: str, what: str) -> list[int]:
    """"10,100,1000" → [10, 100, 1000]; a :class:`zor.common.errors.ConfigError` on anything else."""
    from zor.common.errors import ConfigError

    try:
        values = [int(part.strip().replace("_", "")) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated positive integers like 10,100, got {text!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{what}: expected comma-separated positive integers like 10,100, got {text!r}")
    return values


def parse_methods(text: Optional[str], known: Sequence[str]) -> list[str]:
    """"zor,mlp" → ["zor", "mlp"] (all of ``known`` when empty); a click usage error
    naming the known methods on anything else."""
    import click

    names = [m.strip() for m in text.split(",") if m.strip()] if text else list(known)
    unknown = [m for m in names if m not in known]
    if unknown or not names:
        raise click.BadParameter(f"unknown methods {unknown}: expected some of {', '.join(known)}",
                                 param_hint="--methods")
    return names


def check_json_folder(path: Optional[Path], option: str = "--json") -> None:
    """A click usage error when the folder of ``option PATH`` (an output file) does not exist (checked before
    any work)."""
    import click

    if path is not None and not Path(path).resolve().parent.is_dir():
        raise click.BadParameter(f"folder of {path} does not exist", param_hint=option)


def int_list_option(ctx, param, value):
    """click callback: "10,100" → [10, 100] (None stays None); a usage error otherwise."""
    import click

    from zor.common.errors import ZorError

    try:
        return parse_int_list(value, param.opts[0]) if value is not None else None
    except ZorError as exc:
        raise click.BadParameter(str(exc)) from None
