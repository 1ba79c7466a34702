"""Host side, after the emulated runs: one report of the ARM check, as a table and JSON.

Reads the per-core reports ``check.py`` wrote (``WORK/out/CORE.json``), the timings
``emulate.sh`` recorded (``WORK/timings.txt``: ``name seconds`` lines, plus whether the
root and the host exports were built or reused), and measures the runtime's installed
size on aarch64 from the ``RECORD`` files of the distributions pip put into the root
(the sizes pip wrote, no bytecode: what ``pip install --no-compile zor-edge`` costs
on a Pi). It also sets the emulated core's features beside those of a genuine Pi
(``tests/fixtures/cpuinfo``): qemu's models are close, not identical.

Prints a table; ``--json PATH`` writes everything. Exit 1 when a core is missing or
any of its checks failed.

Example:
    python benchmarks/arm/report.py --work WORK --root ROOT --cores "cortex-a72" --json report.json
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Optional

import click

__all__ = ["record_size", "installed_sizes", "read_timings", "genuine_features", "build_report", "format_table"]

REPO = Path(__file__).resolve().parents[2]
GENUINE = {"cortex-a53": "rpi3-aarch64.txt", "cortex-a72": "rpi4.txt", "cortex-a76": "rpi5.txt"}
RUNTIME_DISTS = ("zor-edge", "numpy", "onnxruntime")


def _dist_name(dist_info: Path) -> str:
    for line in (dist_info / "METADATA").read_text(errors="replace").splitlines():
        if line.startswith("Name:"):
            return line.split(":", 1)[1].strip().lower().replace("_", "-")
    return dist_info.name.split("-")[0].lower()


def record_size(dist_info: Path) -> dict[str, int]:
    """{"bytes", "files"}: the files a distribution's ``RECORD`` lists that are on disk, and their bytes.

    The one installed-size reader of the benchmarks (``benchmarks/runtime_bench.py`` uses it
    too). ``dist_info`` is the distribution's ``NAME-VERSION.dist-info`` folder; the paths
    in its RECORD are relative to the folder that holds it (the site folder). Files it
    lists that are absent (bytecode never compiled, say) are not counted.
    """
    site = Path(dist_info).parent
    total = files = 0
    with open(Path(dist_info) / "RECORD", newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            path = site / row[0]
            if path.is_file():
                total += path.stat().st_size
                files += 1
    return {"bytes": total, "files": files}


def installed_sizes(*sites: Path) -> dict[str, Any]:
    """Bytes per distribution installed in ``sites`` (:func:`record_size`: the files its RECORD lists)."""
    per: dict[str, dict[str, Any]] = {}
    for site in sites:
        for info in sorted(site.glob("*.dist-info")):
            version = info.name[:-len(".dist-info")].split("-")[-1]
            per[_dist_name(info)] = {"version": version, **record_size(info)}
    runtime = sum(per[d]["bytes"] for d in RUNTIME_DISTS if d in per)
    return {"distributions": per, "runtime_bytes": runtime,
            "runtime_bytes_means": " + ".join(RUNTIME_DISTS),
            "all_bytes": sum(d["bytes"] for d in per.values())}


def read_timings(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            out[key] = value
    return out


def genuine_features(core: str) -> Optional[list[str]]:
    """The Features line of a genuine Pi's /proc/cpuinfo for this core (the repo's fixtures)."""
    path = REPO / "tests" / "fixtures" / "cpuinfo" / GENUINE.get(core, "")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("Features"):
            return line.split(":", 1)[1].split()
    return None


def _check(report: dict, name: str) -> dict:
    return next((c for c in report.get("checks", []) if c["name"] == name), {})


def build_report(work: Path, root: Path, cores: list[str], wheel: str = "") -> dict[str, Any]:
    per_core: dict[str, Any] = {}
    for core in cores:
        path = work / "out" / f"{core}.json"
        if not path.is_file():
            per_core[core] = {"core": core, "passed": False, "missing": True,
                              "reason": "no report: the check did not run or crashed (see the log above)"}
            continue
        r = json.loads(path.read_text())
        cpu = r.get("cpu") or {}
        real = genuine_features(core)
        if real is not None and cpu.get("features") is not None:
            r["features_vs_genuine_pi"] = {"emulated_only": sorted(set(cpu["features"]) - set(real)),
                                           "genuine_only": sorted(set(real) - set(cpu["features"]))}
        err = work / f"check-{core}.err"
        if err.is_file():   # onnxruntime's own CPU detection, as it reported it on stderr
            text = err.read_text(errors="replace")
            r["onnxruntime_cpuinfo"] = ("failed: " + next(l for l in text.splitlines() if "cpuinfo" in l)
                                        if "cpuinfo_initialize failed" in text or "Error in cpuinfo" in text
                                        else "initialised")
        per_core[core] = r
    manifest_path = work / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return {
        "what": "zor runtime on emulated Raspberry Pi cores (qemu-user, arm64 Debian root)",
        "timings_are": "setup and check seconds on this x86-64 host; the emulated figures are not Pi speed",
        "wheel": Path(wheel).name if wheel else None,
        "timings": read_timings(work / "timings.txt") if (work / "timings.txt").is_file() else {},
        "installed": installed_sizes(root / "opt" / "site", root / "opt" / "zor"),
        "host": manifest.get("host"),
        "models": {k: {kk: v.get(kk) for kk in ("file", "precision", "sizes", "bytes", "tolerance")}
                   for k, v in manifest.get("models", {}).items()},
        "cores": per_core,
        "passed": bool(per_core) and all(c.get("passed") for c in per_core.values()),
    }


def _fmt(x: Any, spec: str = ".3g") -> str:
    return "-" if x is None else format(x, spec)


def format_table(rep: dict[str, Any]) -> str:
    head = ("core", "profile", "detected", "f32 max|Δ|", "f32 spikes≠", "int8 max|Δ| vs host int8",
            "int8 spike agr. L1", "int8 metric drop", "stream max|Δ|", "checks")
    rows = [head]
    for core, r in rep["cores"].items():
        f32, i8, sf = _check(r, "fewshot-float32"), _check(r, "fewshot-int8"), _check(r, "stateful-stream")
        agree = i8.get("spike_agreement_vs_host_float32") or []
        n_ok = sum(c["passed"] for c in r.get("checks", []))
        rows.append((core, r.get("expected_profile", "-"), str(r.get("detected_profile", "-")),
                     _fmt(f32.get("output_max_abs")), _fmt(f32.get("spike_mismatches"), "d"),
                     _fmt(i8.get("output_max_abs_vs_host_int8")),
                     _fmt(100 * agree[1], ".2f") + " %" if len(agree) > 1 else "-",
                     _fmt(i8.get("metric_drop"), ".4f"),
                     _fmt(sf.get("output_max_abs")), f"{n_ok}/{len(r.get('checks', []))}"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    t = rep["timings"]
    lines.append("")
    lines.append(f"setup {_fmt(t.get('setup_s'), '.1f')} s (root {t.get('root_state', '?')} "
                 f"{_fmt(t.get('root_s'), '.1f')} s, wheel {_fmt(t.get('wheel_s'), '.1f')} s, host exports "
                 f"{t.get('fixtures_state', '?')} {_fmt(t.get('fixtures_s'), '.1f')} s); "
                 + ", ".join(f"{c} {_fmt(t.get(f'core_{c}_s'), '.1f')} s" for c in rep["cores"])
                 + f"; total {_fmt(t.get('total_s'), '.1f')} s")
    inst = rep["installed"]
    d = inst["distributions"]
    lines.append("installed on aarch64 (RECORD sizes, no bytecode): "
                 + ", ".join(f"{k} {v['version']} {v['bytes'] / 2**20:.1f} MiB" for k, v in sorted(d.items()))
                 + f"; runtime ({inst['runtime_bytes_means']}) {inst['runtime_bytes'] / 2**20:.1f} MiB, "
                   f"all {inst['all_bytes'] / 2**20:.1f} MiB")
    for core, r in rep["cores"].items():
        failed = [f"{c['name']} ({c['reason']})" for c in r.get("checks", []) if not c["passed"]]
        if r.get("missing"):
            failed = [r["reason"]]
        fv = r.get("features_vs_genuine_pi") or {}
        note = (f"; qemu model vs genuine Pi features: +{','.join(fv['emulated_only']) or 'none'} "
                f"-{','.join(fv['genuine_only']) or 'none'}") if fv else ""
        ort = f"; onnxruntime cpuinfo {r['onnxruntime_cpuinfo']}" if r.get("onnxruntime_cpuinfo") else ""
        i8 = _check(r, "fewshot-int8")
        if i8.get("kernel"):
            ort += (f"; int8 kernel {i8['kernel']['arithmetic']} sums (max |Δ| {_fmt(i8.get('output_max_abs_vs_reference'))}"
                    f" from their numpy reference; {_fmt(100 * i8.get('output_share_of_bound', 0), '.0f')} % of the "
                    f"quantisation bound at most; host: {i8['kernel']['host'].get('expected_arithmetic')})")
        lines.append(f"{core}: {'all checks passed' if not failed else 'FAILED: ' + '; '.join(failed)}{note}{ort}")
    lines.append("emulated timings (zor-bench inside qemu) are not Raspberry Pi speed figures")
    return "\n".join(lines)


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The work folder emulate.sh ran the cores in (out/CORE.json, timings.txt, manifest.json).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The arm64 root (its opt/site and opt/zor are measured).")
@click.option("--cores", required=True, help="Space-separated core names.")
@click.option("--wheel", default="", help="The project wheel's file name (recorded).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report here.")
def main(work: Path, root: Path, cores: str, wheel: str, json_path: Optional[Path]) -> None:
    """Host side, after the emulated runs: one report of the ARM check, as a table and JSON."""
    rep = build_report(work, root, cores.split(), wheel)
    click.echo(format_table(rep))
    if json_path is not None:
        from zor.common.fileio import write_text_atomic

        write_text_atomic(json_path, json.dumps(rep, indent=2, default=str))
        click.echo(f"wrote {json_path}", err=True)
    if not rep["passed"]:
        raise click.exceptions.Exit(1)


if __name__ == "__main__":
    main()
