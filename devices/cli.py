"""``zor-devices``: list the device profiles, show one, detect this machine's.

    zor-devices list                 one line per profile
    zor-devices show rpi5 [--json]   every field of one profile
    zor-devices detect [--json] [--cpuinfo FILE] [--board TEXT]
                                     the profile of this machine (or of a recorded cpuinfo), and why

Errors end as :func:`zor.common.cli.cli_errors` says (an unknown profile name: exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from zor.common.cli import cli_errors

from .detection import detect
from .profiles import PROFILES, Profile, get

__all__ = ["main"]


def _verdict(p: Profile) -> str:
    return {True: "yes", False: "no", None: "unknown"}[p.int8_pays]


def _recipe(p: Profile) -> str:
    r = p.int8
    return (f"{r.format} {r.activation_type}/{r.weight_type}"
            f"{' per-channel' if r.per_channel else ''}{' reduce_range' if r.reduce_range else ''}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Device profiles: what suits each class of machine, and which one this is."""


@main.command("list")
@cli_errors
def list_cmd() -> None:
    """One line per profile: name, arch, ISA, cores, memory, int8 recipe, int8 pays."""
    rows = [("name", "arch", "isa", "cores", "mem MB", "int8 recipe", "int8 pays")]
    for p in PROFILES.values():
        rows.append((p.name, p.arch, ",".join(p.isa) or "-", str(p.cores), str(p.memory_mb), _recipe(p), _verdict(p)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@main.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@cli_errors
def show_cmd(name: str, as_json: bool) -> None:
    """Every field of profile NAME."""
    p = get(name)                       # an unknown NAME: DeviceError, a usage error (exit 2)
    d = p.to_dict()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    for key, value in d.items():
        if key == "int8":
            value = _recipe(p)
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        click.echo(f"{key:18} {value}")


@main.command("detect")
@click.option("--cpuinfo", "cpuinfo_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Detect from a recorded /proc/cpuinfo text instead of this machine's.")
@click.option("--board", default=None, help="Board model text (as in /proc/device-tree/model).")
@click.option("--json", "as_json", is_flag=True, help="Print the detection as JSON.")
@cli_errors
def detect_cmd(cpuinfo_path: Optional[Path], board: Optional[str], as_json: bool) -> None:
    """The profile of this machine (or of --cpuinfo FILE), and why."""
    text = cpuinfo_path.read_text(errors="replace") if cpuinfo_path else None
    d = detect(text, board)
    if as_json:
        click.echo(json.dumps(d.to_dict(), indent=2))
        return
    click.echo(f"profile: {d.profile.name}{'' if d.matched else ' (fallback)'}")
    click.echo(f"reason:  {d.reason}")
    click.echo(f"isa:     {', '.join(d.cpu.isa) or '-'}; cores listed: {d.cpu.cores}")
