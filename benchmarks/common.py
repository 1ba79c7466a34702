"""The benchmark harness: threads and seeds, a grid runner, summaries, timing, one table printer, one JSON writer.

Every script in ``benchmarks/`` runs its measurements through these pieces:

- :func:`grid` and :func:`run_grid`: every combination of methods × settings × seeds,
  one row each, with a progress bar;
- :func:`summarise`: rows grouped by some keys; the median of each figure over the
  group's repeated runs (seeds), and the smallest and largest of the figures asked for;
- :func:`interleave`, :func:`paired_ratio`, :func:`time_runs`: timing on a shared,
  noisy machine. Speed is a ratio against a reference measured in the same run: the
  measurements take turns round by round, and the ratio is the median of the
  per-round ratios;
- :func:`format_table`: the one fixed-width text table;
- :func:`write_json`: the one JSON writer, atomic (``zor.common.fileio``), with one
  rule for numbers that JSON cannot hold: NaN and ±inf are written as ``null``;
- :func:`command`: the click command every script's ``main`` is (``-h``/``--help``,
  defaults shown in the help, a ``ZorError`` ends it with its class's exit code).

Example:
    >>> rows = [{"method": "a", "seed": s, "psnr": p} for s, p in enumerate((13.0, 14.0, 12.0))]
    >>> print(format_table(summarise(rows, ("method",), ("psnr",), spread={"psnr": "psnr"}),
    ...                    ["method", "seeds", "psnr", "psnr_min", "psnr_max"]))
    method  seeds  psnr   psnr_min  psnr_max
    ------  -----  -----  --------  --------
    a       3      13.00  12.00     14.00
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, TypeVar, Union

import numpy as np

__all__ = [
    "set_threads", "seed_everything", "grid", "run_grid", "summarise", "median", "paired_ratio", "interleave",
    "time_runs", "format_value", "format_table", "to_jsonable", "write_json", "cpu_name", "environment",
    "load_images", "balanced_subset", "progress", "parse_int_list", "parse_methods", "check_json_folder",
    "int_list_option", "command",
]

F = TypeVar("F", bound=Callable[..., Any])
K = TypeVar("K")
Digits = Union[int, str]


# --------------------------------------------------------------------------- threads and seeds
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


# --------------------------------------------------------------------------- grid and summaries
def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes' values as a dict, the first axis outermost.

    E.g. ``grid(seed=[0, 1], method=["a", "b"])`` → seed 0 with a, seed 0 with b, seed 1 with a, seed 1 with b.
    """
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def run_grid(cells: Sequence[dict[str, Any]], measure: Callable[[dict[str, Any]], dict[str, Any]], desc: str,
             show_progress: bool = True, note: Optional[Callable[[dict[str, Any]], str]] = None
             ) -> list[dict[str, Any]]:
    """``measure(cell)`` for every cell, in order, with a progress bar on stderr: one row (dict) per cell.

    ``note(row)`` is shown beside the bar after each cell (e.g. the figure just measured).
    """
    bar = progress(len(cells), desc, show_progress)
    rows = []
    try:
        for cell in cells:
            row = measure(cell)
            rows.append(row)
            bar.update(1)
            if note is not None:
                bar.set_postfix_str(note(row))
    finally:
        bar.close()
    return rows


def summarise(rows: Iterable[dict[str, Any]], by: Sequence[str], medians: Sequence[str], *,
              spread: Mapping[str, str] = {}, first: Sequence[str] = (), integers: Sequence[str] = ("steps",),
              count: str = "seeds") -> list[dict[str, Any]]:
    """One summary per group of rows that share the values of ``by``, in first-seen order.

    Each summary holds the ``by`` keys; each field of ``first`` as the group's first row
    has it (left out when that row lacks it); ``count``: how many rows (repeated runs)
    the group has; for each field of ``medians`` the median of its finite values
    (:func:`median`; None when no row has a value; rounded to an int for the fields of
    ``integers``); and for each ``field → name`` of ``spread`` the smallest and largest
    value as ``name_min`` and ``name_max``.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    out = []
    for key, rs in groups.items():
        s: dict[str, Any] = dict(zip(by, key))
        s.update({f: rs[0][f] for f in first if f in rs[0]})
        s[count] = len(rs)
        for f in medians:
            vals = [r[f] for r in rs if r.get(f) is not None]
            s[f] = median(vals) if vals else None
            if f in integers and s[f] is not None and math.isfinite(s[f]):
                s[f] = int(round(s[f]))
        for f, name in spread.items():
            vals = [r[f] for r in rs if r.get(f) is not None]
            s[f"{name}_min"], s[f"{name}_max"] = (min(vals), max(vals)) if vals else (None, None)
        out.append(s)
    return out


def median(values: Iterable[Optional[float]]) -> float:
    """Median of the finite values (None, NaN and ±inf are skipped; NaN when none is left)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else float("nan")


# --------------------------------------------------------------------------- timing
def paired_ratio(reference: list[float], other: list[float]) -> float:
    """Median over rounds of reference_k / other_k: a speed-up from figures taken side by side.

    On a shared machine the speed of memory drifts between rounds; both figures of a
    round see the same drift, so their ratio varies less than the ratio of the medians.
    E.g. rounds (5, 0.5), (6, 0.55), (4, 0.45) → median(10, 10.9, 8.9) = 10.
    """
    if len(reference) != len(other) or not reference:
        raise ValueError(f"expected two equally long, non-empty lists of rounds, got {len(reference)} and {len(other)}")
    return float(np.median(np.asarray(reference, float) / np.asarray(other, float)))


def interleave(measures: Mapping[K, Callable[[], Any]], rounds: int) -> dict[K, list[Any]]:
    """Take every measurement once per round, in turn, for ``rounds`` rounds: name → its figures, round by round.

    The figures of one round are taken close together, so a burst of load from other
    processes falls on all of them alike; compare them round by round (:func:`paired_ratio`).
    """
    out: dict[K, list[Any]] = {name: [] for name in measures}
    for _ in range(rounds):
        for name, measure in measures.items():
            out[name].append(measure())
    return out


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


# --------------------------------------------------------------------------- table and JSON
def format_value(value: Any, digits: Digits = 2) -> str:
    """One table cell: None as "-", ints with thousands separators, floats with ``digits`` decimals
    (or ``digits`` as a format spec such as ".1e"), anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return format(float(value), digits) if isinstance(digits, str) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str], headers: Optional[Sequence[str]] = None,
                 digits: Union[Digits, Mapping[str, Digits]] = 2, align: str = "left") -> str:
    """A fixed-width text table of ``rows`` (dicts) in the given column order.

    ``digits``: decimals (or a format spec) for every float column, or a mapping column →
    decimals/spec (2 for columns it does not name); ``align``: "left" or "right".
    """
    headers = list(headers or columns)

    def dig(c: str) -> Digits:
        return digits.get(c, 2) if isinstance(digits, Mapping) else digits

    cells = [[format_value(r.get(c), dig(c)) for c in columns] for r in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(parts: Sequence[str]) -> str:
        return "  ".join(p.rjust(w) if align == "right" else p.ljust(w) for p, w in zip(parts, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(row) for row in cells])


def to_jsonable(obj: Any) -> Any:
    """Plain JSON data: numpy scalars and arrays unwrapped, paths as text, NaN and ±inf as None (null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Union[str, os.PathLike], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (``zor.common.fileio``); NaN and ±inf become null."""
    from zor.common.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


# --------------------------------------------------------------------------- environment and data
def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu": cpu_name(),
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


def progress(total: int, desc: str, enabled: bool = True) -> Any:
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


# --------------------------------------------------------------------------- command line
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


def check_json_folder(path: Optional[Union[str, os.PathLike]], option: str = "--json") -> None:
    """A click usage error when the folder of ``option PATH`` (an output file) does not exist (checked before
    any work)."""
    import click

    if path is not None and not Path(path).resolve().parent.is_dir():
        raise click.BadParameter(f"folder of {path} does not exist", param_hint=option)


def int_list_option(ctx: Any, param: Any, value: Optional[str]) -> Optional[list[int]]:
    """click callback: "10,100" → [10, 100] (None stays None); a usage error otherwise."""
    import click

    from zor.common.errors import ZorError

    try:
        return parse_int_list(value, param.opts[0]) if value is not None else None
    except ZorError as exc:
        raise click.BadParameter(str(exc)) from None


def command(fn: F) -> F:
    """A benchmark's ``main`` as a click command: ``-h``/``--help``, every default shown in the help, and a
    ``ZorError`` ending it with its class's exit code (``zor.common.cli.cli_errors``: usage 2, failure 1).

    Put it above the ``@click.option`` decorators, where ``@click.command`` would go.
    """
    import click

    from zor.common.cli import cli_errors

    settings = {"help_option_names": ["-h", "--help"], "show_default": True}
    return click.command(context_settings=settings)(cli_errors(fn))  # type: ignore[return-value]
