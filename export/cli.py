"""``zor-export``: a checkpoint in, one verified ONNX file out.

    zor-export CHECKPOINT -o MODEL.onnx [--device PROFILE] [--quantize none|int8|fp16]
               [--calibration DATA.npy] [--max-drop X] [--spike-budget F] [--steps T] [--no-verify]
               [--path dense|sparse|auto] [--max-batch N] [--external-weights]
    zor-export GRAPH.nir -o MODEL.onnx --dt DT [--steps T] [--path dense|sparse|auto] [--discretisation euler|exp]
               [--calibration EVENTS.npy] [--quantize int8 [--max-drop X] [--spike-budget F]] [--device PROFILE]
               [--no-verify]                                    (a NIR graph: zor.export.nir, docs/nir.md)
    zor-export verify MODEL.onnx --checkpoint CHECKPOINT [--data DATA.npy] [--steps T]
    zor-export inspect MODEL.onnx [--json]

Output (-o): checked before any work starts (:mod:`zor.common.fileio`): it may not be the
checkpoint or the calibration file (symlinks and hard links included), nor a folder;
missing folders above it are created, and removed again when the export fails.

Exit codes (each error's class carries its own, :mod:`zor.common.cli`): 0 done; 2 usage
errors (bad option, missing/truncated/foreign checkpoint, unknown device profile,
calibration data of the wrong width, an output that is an input or cannot be written, a
file that is not a Zor export); 1 failures (verification past tolerance, int8 or fp16
dropping the task metric past --max-drop, a corrupt model). A failed export writes nothing.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(main, ["--help"]).exit_code
    0
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from zor.common.cli import cli_errors
from zor.common.errors import ConfigError, OutputPathError
from zor.common.fileio import check_output_file, output_folders

__all__ = ["main"]

# The exporter (torch, onnx, onnxruntime) is imported inside each command, so that
# ``zor-export --help`` and usage errors answer without loading it.


class _ExportGroup(click.Group):
    """``zor-export CHECKPOINT ...`` runs the ``export`` command; ``verify``/``inspect`` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["export", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_ExportGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Export a Zor checkpoint to one verified, self-describing ONNX file.

    \b
      zor-export CHECKPOINT -o MODEL.onnx [options]     (same as: zor-export export ...)
      zor-export verify MODEL.onnx --checkpoint CHECKPOINT
      zor-export inspect MODEL.onnx
    """


def _threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _export_learnable(checkpoint: Path, output: Path, threads: int, other_options: bool) -> None:
    """zor-export --learnable (zor.export.learnable)."""
    if other_options:
        raise ConfigError("--learnable writes a float32 dense learning step, always verified: expected no "
                          "--quantize, --path, --external-weights or --no-verify with it")
    from .learnable import export_learnable

    _threads(threads)
    with output_folders(output.parent):
        rep = export_learnable(checkpoint, output)
    click.echo(f"wrote {output} (learnable step; verified against the engine over {rep['batches']} batches: worst "
               f"relative difference {max(rep['worst'].values()):.2g}, spikes {rep['spikes'] - rep['spike_mismatches']}"
               f"/{rep['spikes']} agree)")


def _export_nir(source: Path, output: Path, dt: float | None, steps: int | None, quantize: str, path: str,
                calibration: Path | None, no_verify: bool, threads: int, discretisation: str = "euler",
                device: str = "generic", max_drop: float = 0.5, spike_budget: float = 0.99) -> None:
    """zor-export GRAPH.nir --dt DT (zor.export.nir): a NIR graph to a verified stateful step graph."""
    if dt is None:
        raise ConfigError(f"{source}: a NIR graph needs --dt: the time step (in the file's time unit, as its τ) "
                          "its continuous-time nodes are discretised with, e.g. --dt 1e-4")
    from .nir import export_nir

    _threads(threads)
    with output_folders(output.parent):
        res = export_nir(source, output, dt=dt, steps=steps or 100, quantize=quantize, path=path,
                         calibration=calibration, verify_model=not no_verify, discretisation=discretisation,
                         device=device, max_drop=max_drop, spike_budget=spike_budget)
    nir_meta = json.loads(res.metadata.get("zor.nir", "{}"))
    click.echo(f"wrote {res.path} ({res.bytes:,} bytes, {res.mode}, {len(nir_meta.get('nodes', []))} NIR nodes, "
               f"dt {dt:g}, {nir_meta.get('discretisation', '?')}) in {res.timings['total_s']:.2f} s "
               f"(build {res.timings['build_s']:.2f}, verify {res.timings['verify_s']:.2f})")
    for run in res.verification.get("nir", {}).get("runs", []):
        click.echo(f"verification from {run['start']} over {run['steps']} steps: " + ", ".join(
            f"{n} {100 * s['agreement']:.3f} % ({s['ties']} ties)" for n, s in run["spikes"].items()))
    if res.verification.get("skipped"):
        click.echo("verification: skipped (--no-verify)")
    for row in res.paths.get("connections", []):
        click.echo(f"  node {row['node']!r}: {row['path']}: {row['reason']}")
    if res.mode == "int8":
        q = res.quantization
        click.echo(f"int8 ({q['profile']}): class agreement with float {q['metric']['candidate']:.2f} %, spikes "
                   + ", ".join(f"{r['node']} {100 * r['spike_agreement']:.2f} %" for r in q["spikes"])
                   + f"; float fallback: {', '.join(q['fallback']) or 'none'}")


@main.command("export")
@click.argument("checkpoint", type=click.Path(dir_okay=True, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="The .onnx file to write: not the checkpoint or calibration file; missing folders are "
                   "created (and removed again if the export fails).")
@click.option("--device", default="generic", show_default=True,
              help="Device profile whose int8 recipe to use (see zor.devices; 'auto' detects where supported).")
@click.option("--quantize", type=click.Choice(["none", "int8", "fp16"]), default="none", show_default=True)
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="A .npy (N, n_0) of typical inputs; default: the data set the checkpoint's task records, if any "
                   "(e.g. Fashion-MNIST: the bundled subset).")
@click.option("--max-drop", type=click.FloatRange(min=0.0), default=0.5, show_default=True,
              help="Refuse int8/fp16 when the task metric drops by more points than this.")
@click.option("--spike-budget", type=click.FloatRange(0.0, 1.0), default=0.99, show_default=True,
              help="int8: minimum spike agreement per layer; a layer below it falls back to float.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps verified for stateful models (default 100).")
@click.option("--no-verify", is_flag=True, help="Skip the engine-vs-onnxruntime parity check (not recommended).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--path", "path", type=click.Choice(["dense", "sparse", "auto"]), default="dense", show_default=True,
              help="Per connection: dense MatMul, sparse (event-driven: only the weight rows of units that spiked "
                   "are read), or auto (sparse where the spike rate measured on the calibration data is below the "
                   "device profile's break-even).")
@click.option("--max-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Largest batch the sparse form accepts: 1 = batch-1 streaming form; more = union of the batch's "
                   "active units.")
@click.option("--external-weights", is_flag=True,
              help="Write the weights to MODEL.weights next to MODEL.onnx (ONNX external data; the runtime can then "
                   "read only the rows of units that spike, for models larger than memory).")
@click.option("--learnable", is_flag=True,
              help="Write the learning step instead (zor.export.learnable): a graph a device trains with "
                   "onnxruntime alone (zor.runtime.Learner, zor-learn); verified against the engine over 100 batches.")
@click.option("--dt", type=float, default=None,
              help="NIR graphs (CHECKPOINT ending in .nir): the time step their ODEs are discretised with (forward "
                   "Euler), in the file's time unit.")
@click.option("--discretisation", type=click.Choice(["euler", "exp"]), default="euler", show_default=True,
              help="NIR graphs: forward Euler (a = dt/τ) or exponential Euler (a = 1 − e^(−dt/τ)); see docs/nir.md.")
@cli_errors
def export_cmd(checkpoint: Path, output: Path, device: str, quantize: str, calibration: Path | None,
               max_drop: float, spike_budget: float, steps: int | None, no_verify: bool, threads: int,
               path: str, max_batch: int, external_weights: bool, learnable: bool = False,
               dt: float | None = None, discretisation: str = "euler") -> None:
    """Export CHECKPOINT to an ONNX file (verified unless --no-verify)."""
    if output.is_dir():
        raise OutputPathError(f"-o {output}: it is a folder, expected a file path like model.onnx")
    check_output_file(output, [checkpoint, calibration], create=True, what="-o")   # before the exporter loads
    if checkpoint.suffix.lower() == ".nir":
        _export_nir(checkpoint, output, dt, steps, quantize, path, calibration, no_verify, threads, discretisation,
                    device, max_drop, spike_budget)
        return
    if dt is not None:
        raise ConfigError(f"--dt is for NIR graphs (a .nir file), got {checkpoint}: a Zor checkpoint has no time step")
    if learnable:
        _export_learnable(checkpoint, output, threads, quantize != "none" or path != "dense" or external_weights
                          or no_verify)
        return
    from .api import export
    from .inspect import paths_line, quantization_line, verification_line

    _threads(threads)
    with output_folders(output.parent):
        res = export(checkpoint, output, device=device, quantize=quantize, calibration=calibration,
                     max_drop=max_drop, spike_budget=spike_budget, verify_model=not no_verify, steps=steps,
                     threads=threads, path=path, max_batch=max_batch, external_weights=external_weights)
    t = res.timings
    click.echo(f"wrote {res.path} ({res.bytes:,} bytes, {'float32' if res.mode == 'none' else res.mode}) in "
               f"{t['total_s']:.2f} s (build {t['build_s']:.2f}, paths {t['paths_s']:.2f}, verify {t['verify_s']:.2f}, "
               f"quantize {t['quantize_s']:.2f}, write {t['write_s']:.2f})")
    click.echo("verification: " + verification_line(res.verification))
    click.echo("paths: " + paths_line(res.paths))
    for row in res.paths.get("connections", []):
        if path != "dense":
            click.echo(f"  connection {row['connection']}: {row['path']}"
                       + (f" ({row['precision']} rows)" if row["path"] == "sparse" else "") + f": {row['reason']}")
    if res.weights:
        click.echo(f"weights: {res.weights['location']} ({res.weights['bytes']:,} bytes, "
                   f"{len(res.weights['tensors'])} tensors)")
    if res.mode != "none":
        click.echo("quantization: " + quantization_line(res.quantization))
        for row in res.quantization.get("layers", []):
            if row.get("layer", 0) >= 1 or res.mode == "fp16":
                click.echo(f"  layer {row['layer']}: spike agreement {100 * row['spike_agreement']:.3f} %"
                           + (f", {row['precision']}" if "precision" in row else "")
                           + (f", weights {row['weight_bytes']:,} B (float {row['weight_bytes_float']:,} B)"
                              if "weight_bytes" in row else ""))


@main.command("verify")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="The checkpoint it was exported from.")
@click.option("--data", type=click.Path(path_type=Path), default=None, help="A .npy (N, n_0) of inputs to verify on.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Steps for stateful models (default 100).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@cli_errors
def verify_cmd(model: Path, checkpoint: Path, data: Path | None, steps: int | None, threads: int) -> None:
    """Re-run verification of MODEL against CHECKPOINT; exit 1 past tolerance."""
    from .reverify import verify_file

    _threads(threads)
    rep = verify_file(model, checkpoint, data=data, steps=steps, threads=threads)
    click.echo(f"{model.name}: verification passed ({rep.get('mode')})")
    for row in rep.get("layers", []):
        click.echo(f"  layer {row['layer']}: spike agreement {100 * row['spike_agreement']:.4f} %"
                   + (f" ({row['ties']} ties)" if "ties" in row else "")
                   + f", charge error max {row['charge_max_err']:.3g} mean {row['charge_mean_err']:.3g}")
    outputs = rep.get("outputs") or {"output": rep.get("output", {})}
    for name, acc in outputs.items():
        click.echo(f"  {name}: max abs diff {acc.get('max_abs_diff', 0):.3g}, mean {acc.get('mean_abs_diff', 0):.3g}")
    if "metric" in rep:
        m = rep["metric"]
        click.echo(f"  task metric ({m['metric']} vs {m['reference']}): float {m['float']:.3f}, "
                   f"file {m['candidate']:.3f}, drop {m['drop']:.4f}")


@main.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the whole inspection as JSON.")
@cli_errors
def inspect_cmd(model: Path, as_json: bool) -> None:
    """Show MODEL's metadata, layer table, thresholds summary and sizes."""
    from .inspect import format_inspection, inspect_file

    info = inspect_file(model)
    click.echo(json.dumps(info, indent=2) if as_json else format_inspection(info))


if __name__ == "__main__":  # pragma: no cover
    main()
