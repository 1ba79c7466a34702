"""``zor-run`` and ``zor-bench``: the runtime's command lines.

    zor-run MODEL INPUT... -o OUT [--device PROFILE] [--threads N] [--quiet] [--weights auto|load|rows]
            [--task classify|colorize|denoise|translate [--beam N]] [--max-pixels N]
        Runs MODEL on each INPUT (.npy arrays, or .png images for image tasks).
        With --task, runs the task helper instead: classify/colorize/denoise take PNG
        images of any size (palette, 16-bit and alpha included; resized or tiled to
        the model, with a note on stderr saying so) and write NAME.json (index,
        label, scores) or NAME.png; translate takes .txt files, one text per line,
        and writes NAME.txt with one translation per line (lines end at "\n" only;
        U+2028, \f and the like inside a line are spaces). PNG inputs larger than
        --max-pixels (default 64 Mpx) are refused before decoding.
        OUT is a folder receiving NAME.npy per input (the output rows), NAME.json
        for classification (index and label per row) and NAME.png for image
        reconstructions of PNG inputs; with a single INPUT, OUT may instead be a file
        path ending in a suffix the run writes (.npy; .json for a classifier; .png for
        an image model on a PNG input; the task's own with --task).
        Output rules, checked before the model runs: OUT's missing folders (OUT itself,
        or a file's folder, and their parents) are created, and removed again when the
        run fails before writing; no output may be an input (MODEL or an INPUT, through
        a symlink or hard link too); an OUT suffix the run cannot write is refused.
        A progress bar goes to stderr when there are several inputs. A sparse export
        that takes fewer rows per call than a file holds runs it in chunks.

    zor-bench MODEL [MODEL...] [--device PROFILE] [--batch 64] [--calls 100]
              [--repeats 5] [--threads N] [--input X.npy] [--json PATH] [--weights auto|load|rows]
              [--sentences TEXTS.txt]
        Latency p50/p95 at batch 1 and --batch, throughput, peak RSS, size, spike
        rates and synaptic ops per model (float32 / int8, dense / sparse / auto
        exports of one model, labelled from their metadata, side by side with the
        speed-up over the dense file). --sentences adds ms per sentence and tokens
        per second for translation models. Prints a table; --json writes the figures.
        A NIR import runs as a stream carrying its state: per-step latency, spike rate per
        spiking node, synaptic ops per edge of its graph, on --input events (T, [B,] *shape).
        zor-bench benches model files only: the torch engine as a reference and the
        export of a checkpoint once per path are ``python -m benchmarks.runtime_bench``.

Errors end as :func:`zor.common.cli.cli_errors` says: a usage error (a missing or foreign
file, a bad input, an unknown device) exits 2 with the reason, a failure exits 1;
nothing prints a traceback.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Optional

import click
import numpy as np

from zor.common import format as fmt
from zor.common.cli import cli_errors
from zor.common.errors import DataError, ModelFileError, OutputPathError, ZorError
from zor.common.fileio import (
    check_not_an_input,
    check_output_file,
    check_output_folder,
    output_folders,
    write_bytes_atomic,
    write_text_atomic,
)
from zor.common.textdecode import one_line

from . import tasks
from .bench import (
    format_table,
    format_translation,
    run_bench,
    run_chunked,
    translation_speed,
)
from .events import is_event_model, load_events, run_events
from .model import Model
from .png import DEFAULT_MAX_PIXELS, read_png, write_png
from .tasks.translate import text_lines

__all__ = ["run_main", "bench_main", "load_input"]

_CTX = {"help_option_names": ["-h", "--help"]}


def load_input(path: Path, model: Model, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, bool]:
    """(rows for ``model``, whether the file held images) from a .npy or .png file (PNG: at most ``max_pixels``)."""
    suffix = path.suffix.lower()
    in_spec = model.metadata.task.get("input", {}) or {}
    if suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: expected a .npy array file, could not read it ({exc})") from None
    elif suffix == ".png":
        shape = tasks.image_shape(in_spec)
        if shape is None:
            raise DataError(f"{path}: PNG input needs an image task, but the model's task {model.task!r} "
                            "declares no input image shape: pass the rows as .npy")
        arr = read_png(path, max_pixels=max_pixels)
        if arr.ndim == 3 and len(shape) == 2:            # colour PNG for a grey model: luma
            arr = np.round(arr @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        if tuple(arr.shape) != tuple(shape):
            raise DataError(f"{path}: expected a {'x'.join(map(str, shape))} image for this model, got "
                            f"{'x'.join(map(str, arr.shape))}")
    else:
        hint = " (texts to translate, one per line? use --task translate)" if suffix == ".txt" else ""
        raise DataError(f"{path}: expected a .npy or .png input file, got {suffix or 'no suffix'!r}{hint}")
    shape = tasks.image_shape(in_spec)
    images = shape is not None and arr.ndim >= len(shape) and tuple(arr.shape[arr.ndim - len(shape):]) == tuple(shape)
    if images:
        return tasks.rows_from_images(arr, in_spec), True
    if arr.ndim == 1 and arr.shape[0] == model.sizes[0]:
        arr = arr[None]
    return arr, False


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _write_outputs(model: Model, rows: np.ndarray, from_png: bool, out: Path, stem: str,
                   single_file: bool) -> list[Path]:
    """Write one INPUT's output rows: to the file OUT (its suffix checked before the run), or into the folder
    OUT as NAME.npy, NAME.json (a classifier: index and label per row) and NAME.png (an image model run on
    a PNG input)."""
    suffixes = [out.suffix.lower()] if single_file else \
        [".npy"] + [".json"] * (model.task == "classify") + [".png"] * _can_png(model, from_png)
    written = []
    for suffix in suffixes:
        target = out if single_file else out / f"{stem}{suffix}"
        if suffix == ".npy":
            write_bytes_atomic(target, _npy_bytes(rows))
        elif suffix == ".json":
            labels, idx = _labels(model, rows.shape[1]), np.argmax(rows, axis=1)
            write_text_atomic(target, json.dumps({"index": [int(i) for i in idx],
                                                  "label": [labels[i] if labels else str(int(i)) for i in idx]}))
        else:
            spec = model.metadata.task.get("output", {}) or {}
            img = tasks.images_from_rows(rows, spec, _image_out_shape(model))[0]
            write_png(target, np.round(img * 255).astype(np.uint8))
        written.append(target)
    return written


TASK_CHOICES = ("classify", "colorize", "denoise", "translate")
_TASK_SUFFIX = {"classify": ".json", "colorize": ".png", "denoise": ".png", "translate": ".txt"}
_TASK_INPUT = {"classify": ".png", "colorize": ".png", "denoise": ".png", "translate": ".txt"}
# an OUT ending in one of these names a file (an existing folder of that name stays a folder)
_FILE_SUFFIXES = (".npy", ".png", ".json", ".txt", ".npz", ".csv", ".tsv", ".jpg", ".jpeg", ".bmp", ".gif",
                  ".tif", ".tiff", ".webp", ".onnx", ".zor", ".bin", ".pt", ".h5")


def _labels(model: Model, width: int) -> list[str]:
    """The classifier's labels as text (none: the index is the label); ModelFileError unless one per output."""
    labels = model.metadata.task.get("labels") or []
    if not isinstance(labels, list) or (labels and len(labels) != width):
        count = f"{len(labels)} labels" if isinstance(labels, list) else f"labels of type {type(labels).__name__}"
        raise ModelFileError(f"{model.path.name}: the metadata lists {count} for {width} output units: expected "
                             "one label per output unit")
    return [str(label) for label in labels]


def _image_out_shape(model: Model) -> Optional[tuple]:
    """The image shape of ``model``'s output rows (the input's when the output declares none), or None."""
    task = model.metadata.task
    return tasks.image_shape(task.get("output", {}) or {}) or tasks.image_shape(task.get("input", {}) or {})


def _can_png(model: Model, from_png: bool) -> bool:
    """Whether a run of ``model`` on a PNG input (``from_png``) can write its output rows as a PNG image."""
    shape = _image_out_shape(model)
    return from_png and shape is not None and model.task != "classify" and model.sizes[-1] == int(np.prod(shape))


def _writes(model: Model, task: Optional[str], path: Path) -> list[str]:
    """The suffixes of the files one INPUT ``path`` gives (into a folder)."""
    if task is not None:
        return [_TASK_SUFFIX[task]]
    return [".npy"] + [".json"] * (model.task == "classify") + [".png"] * _can_png(model, path.suffix.lower() == ".png")


def _check_file_suffix(model: Model, task: Optional[str], path: Path, out: Path) -> None:
    """OutputPathError unless the run of ``path`` can write the file ``out`` (its suffix is one it writes)."""
    suffix, can = out.suffix.lower(), _writes(model, task, path)
    if suffix in can:
        return
    if task is not None:
        why = f"--task {task} writes {can[0]} files: expected OUT ending in {can[0]} or a folder"
    elif suffix == ".png":
        why = ".png output needs an image model run on a PNG input: expected OUT ending in " + " or ".join(can)
    elif suffix == ".json":
        why = (f".json output is for classification; this model's task is {model.task!r}: expected OUT ending in "
               + " or ".join(can))
    elif suffix == ".txt":
        why = ".txt output is for --task translate; this run writes " + ", ".join(can) + ": expected OUT ending in one of them"
    else:
        why = f"zor-run does not write {suffix} files; this run writes " + ", ".join(can) + ": expected OUT ending in one of them"
    raise OutputPathError(f"-o {out}: {why}, or a folder")


def _check_inputs(inputs: tuple, task: Optional[str]) -> None:
    """DataError naming the first INPUT of a kind the run cannot read (before any work)."""
    for path in inputs:
        suffix = path.suffix.lower()
        if task is None and suffix not in (".npy", ".png"):
            hint = " (texts to translate, one per line? use --task translate)" if suffix == ".txt" else ""
            raise DataError(f"{path}: expected a .npy or .png input file, got {suffix or 'no suffix'!r}{hint}")
        if task is not None and suffix != _TASK_INPUT[task]:
            what = "a .txt file (one text per line)" if task == "translate" else "a .png image"
            raise DataError(f"{path}: expected {what} for --task {task}, got {suffix or 'no suffix'!r}")


def _output_mode(out: Path, inputs: tuple) -> bool:
    """Whether OUT is one file (else a folder), with the path checks that need no model (module docstring)."""
    single = out.suffix.lower() in _FILE_SUFFIXES and not out.is_dir()
    if single and len(inputs) > 1:
        raise OutputPathError(f"-o {out}: {len(inputs)} inputs write one output each: expected OUT to be a folder, "
                              f"got a path ending in {out.suffix}")
    if not single and out.exists() and not out.is_dir():
        raise OutputPathError(f"-o {out}: expected a folder for {len(inputs)} input(s) (or, with one input, a path "
                              "ending in .npy/.png/.json/.txt), got an existing file")
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems) and not single:
        raise OutputPathError("two inputs share a file name stem; their outputs would overwrite each other")
    if single:
        check_output_file(out, inputs, create=True, what="-o")
    else:
        check_output_folder(out, create=True, what="-o")
    return single


def _plan_outputs(model: Model, task: Optional[str], inputs: tuple, out: Path, single: bool) -> None:
    """The checks that need the model: OUT's suffix, a classifier's labels, no planned output an input."""
    if single:
        _check_file_suffix(model, task, inputs[0], out)
    if model.task == "classify":
        _labels(model, model.sizes[-1])
    targets = [out] if single else [out / f"{p.stem}{s}" for p in inputs for s in _writes(model, task, p)]
    for target in targets:
        check_not_an_input(target, [model.path, *inputs], what="output")


def _run_task(model: Model, task: str, beam: Optional[int], path: Path, out: Path, single: bool,
              quiet: bool, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> list[Path]:
    """One INPUT through a task helper; writes NAME.json / NAME.png / NAME.txt."""
    target = out if single else out / f"{path.stem}{_TASK_SUFFIX[task]}"
    if task == "translate":
        try:
            lines = text_lines(path.read_text(encoding="utf-8"))    # split on "\n" only: U+2028, \f stay inside
        except UnicodeDecodeError as exc:
            raise DataError(f"expected UTF-8 text, could not decode it ({exc.reason})") from None
        if not any(line.strip() for line in lines):
            raise DataError("the file holds no text to translate (empty or blank lines only)")
        # line i of the output translates line i of the input (a blank line stays blank)
        outputs = [one_line(t) for t in tasks.translate(model, lines, beam=beam)]   # one line each, always
        write_text_atomic(target, "\n".join(outputs) + "\n")
        return [target]
    result = tasks.run_task(model, task, tasks.load_image(path, max_pixels=max_pixels))
    if not quiet:
        for note in result.notes:
            click.echo(f"{path.name}: {note}", err=True)
    if task == "classify":
        c = result.classes
        label = c.label if isinstance(c.label, str) else c.label[0]       # one image: one str label
        write_text_atomic(target, json.dumps({"index": int(c.index[0]), "label": label,
                                              "scores": [float(v) for v in c.scores[0]]}))
    else:
        tasks.save_image(target, result.image)
    return [target]


class _Bar:
    """A dependency-free progress bar on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.enabled = total, 0, enabled and total > 1

    def step(self, label: str) -> None:
        self.done += 1
        if self.enabled:
            filled = int(30 * self.done / self.total)
            click.echo(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label[:40]:40}",
                       err=True, nl=self.done == self.total)


@click.command(context_settings=_CTX)
@click.argument("model_path", metavar="MODEL", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Output folder (or, with one INPUT, a .npy/.png/.json/.txt file the run writes); missing "
                   "folders are created (and removed if the run fails before writing); no output may be an input.")
@click.option("--device", default="auto", show_default=True, help="Device profile name (zor-devices list) or auto.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads (at most 4 per CPU of this machine).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-file lines.")
@click.option("--weights", type=click.Choice(["auto", "load", "rows"]), default="auto", show_default=True,
              help="Models with external weights: load them, read only the rows of units that spike, or choose by "
                   "free memory.")
@click.option("--task", type=click.Choice(TASK_CHOICES), default=None,
              help="Run a task helper instead of raw rows: classify/colorize/denoise take PNG images of any size "
                   "(resized or tiled to the model), translate takes .txt files (one text per line).")
@click.option("--beam", type=click.IntRange(min=1), default=None,
              help="With --task translate: beam width (1 = greedy; default: the model's own).")
@click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Largest PNG input read, in pixels (64 Mpx = 8192 x 8192); a larger image is refused from its "
                   "header, before decoding.")
@cli_errors
def run_main(model_path: Path, inputs: tuple, out: Path, device: str, threads: Optional[int], quiet: bool,
             weights: str, task: Optional[str], beam: Optional[int], max_pixels: int) -> None:
    """Run MODEL (a Zor ONNX export) on INPUT files (.npy or .png) and write the outputs to -o OUT."""
    if beam is not None and task != "translate":
        raise click.UsageError("--beam is for --task translate")
    _check_inputs(inputs, task)
    single = _output_mode(out, inputs)
    check_not_an_input(out, [model_path], what="-o")
    model = Model(model_path, device=device, threads=threads, weights=weights)
    _plan_outputs(model, task, inputs, out, single)
    with output_folders(out.parent if single else out):
        _run_inputs(model, inputs, out, single, task, beam, quiet, max_pixels)


def _run_inputs(model: Model, inputs: tuple, out: Path, single: bool, task: Optional[str], beam: Optional[int],
                quiet: bool, max_pixels: int) -> None:
    """Each INPUT through the model (or the task helper) into OUT, with a progress bar."""
    bar = _Bar(len(inputs), not quiet)
    for path in inputs:
        try:
            if task is not None:
                written = _run_task(model, task, beam, path, out, single, quiet, max_pixels)
            else:
                if is_event_model(model) and path.suffix.lower() == ".npy":   # a NIR import: T steps of events
                    written = [out if single else out / f"{path.stem}.npy"]
                    write_bytes_atomic(written[0], _npy_bytes(run_events(model, load_events(path))))
                else:
                    rows, from_png = load_input(path, model, max_pixels)
                    result = run_chunked(model, rows)[fmt.OUTPUT]      # a sparse export's batch limit: in chunks
                    written = _write_outputs(model, result, from_png, out, path.stem, single)
        except ZorError as exc:         # name the input once; cli_errors ends with the error's own exit code
            if str(path) not in str(exc) and path.name not in str(exc):
                exc.args = (f"{path}: {exc}",) + exc.args[1:]
            raise
        bar.step(path.name)
        if not quiet and not bar.enabled:
            click.echo(f"{path.name} -> {', '.join(str(w) for w in written)}")


@click.command(context_settings=_CTX)
@click.argument("models", metavar="MODEL...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--device", default="auto", show_default=True, help="Device profile name (zor-devices list) or auto.")
@click.option("--batch", type=click.IntRange(min=1), default=64, show_default=True, help="The larger batch size.")
@click.option("--calls", type=click.IntRange(min=1), default=100, show_default=True, help="Timed calls per measurement.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Measurements per figure (the median is reported).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime intra-op threads (at most 4 per CPU of this machine).")
@click.option("--input", "input_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Representative rows (.npy, (N, n_0)) for timing and spike rates (NIR import: events (T, [B,] *shape)).")
@click.option("--no-rss", is_flag=True, help="Skip the peak-RSS subprocesses.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write the figures as JSON.")
@click.option("--weights", type=click.Choice(["auto", "load", "rows"]), default="auto", show_default=True,
              help="Models with external weights: load them, read rows on demand, or choose by free memory.")
@click.option("--sentences", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Translation models: a .txt file, one sentence per line, for ms/sentence and tokens/s.")
@cli_errors
def bench_main(models: tuple, device: str, batch: int, calls: int, repeats: int, threads: Optional[int],
               input_path: Optional[Path], no_rss: bool, json_path: Optional[Path], weights: str,
               sentences: Optional[Path]) -> None:
    """Benchmark MODEL files (e.g. float32 / int8, dense / sparse / auto exports of one model) on this machine."""
    if json_path is not None:       # checked before the benchmark runs; its missing folders are made at the end
        check_output_file(json_path, [*models, input_path, sentences], create=True, what="--json")
    data = None
    if input_path is not None:
        data, _ = load_input(input_path, Model(models[0], device=device, threads=threads))
    report = run_bench([str(m) for m in models], device=device, batch=batch, calls=calls, repeats=repeats,
                       threads=threads, inputs=data, rss=not no_rss, progress=lambda s: click.echo(s, err=True),
                       weights=weights)
    if sentences is not None:
        texts = [t for t in sentences.read_text(encoding="utf-8").splitlines() if t.strip()]
        if not texts:
            raise click.UsageError(f"--sentences {sentences}: expected one sentence per line, the file has none")
        report["translation"] = translation_speed([str(m) for m in models], texts, device, threads, batch,
                                                  repeats=min(repeats, 3))
        if not report["translation"]:
            raise click.UsageError("--sentences is for translation models; none of the MODEL files is one")
    click.echo(format_table(report))
    if report.get("translation"):
        click.echo("\ntranslation (greedy):\n" + format_translation(report["translation"]))
    if json_path is not None:
        with output_folders(json_path.parent):
            write_text_atomic(json_path, json.dumps(report, indent=2))
        click.echo(f"wrote {json_path}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_main())
