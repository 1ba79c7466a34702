"""Each benchmark script runs end to end with --quick and writes valid JSON (and PNG);
usage errors exit 2 with a message that says what was expected."""

import json

import pytest
from click.testing import CliRunner

from benchmarks import engine_throughput, fashion_fewshot, rule_variants
from benchmarks.common import balanced_subset, format_table, parse_int_list, to_jsonable
from zor.common.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(main, args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    return result


def test_fashion_fewshot_quick_writes_json_and_png(tmp_path):
    out_json, out_png = tmp_path / "ff.json", tmp_path / "ff.png"
    result = invoke(fashion_fewshot.main, ["--quick", "--no-progress", "--json", str(out_json), "--png", str(out_png)])
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["benchmark"] == "fashion_fewshot"
    assert data["config"]["budgets_s"] == {"10": 0.05, "100": 0.1}
    methods = {r["method"] for r in data["rows"]}
    assert methods == {"zor", "mlp", "mlp-lr3e-3", "mlp-sigmoid", "leaky-bptt", "lif-stdp", "mean"}
    assert {r["scale"] for r in data["rows"]} == {10, 100}
    for r in data["rows"]:
        assert 0.0 < r["accuracy"] <= 100.0 and r["steps"] >= 1
    assert [s["method"] for s in data["quick_start"]["summary"]] == \
        ["zor (quick start)", "mlp AdamW lr=1e-3", "mlp AdamW lr=3e-3"]
    assert [c["scale"] for c in data["comparison"]] == [10, 100]
    assert out_png.read_bytes()[:8] == PNG_MAGIC
    assert "Equal wall time" in result.output and "Seed quick start" in result.output


def test_rule_variants_quick_ranks_every_configuration(tmp_path):
    out = tmp_path / "rv.json"
    result = invoke(rule_variants.main, ["--quick", "--no-progress", "--steps", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert len(data["ranked"]) == 4 * 2 * 2 * 3                      # rules × novelty × homeostasis × optimizer
    assert [e["rank"] for e in data["ranked"]] == list(range(1, 49))
    assert data["verdict"]["default"] == "gated nov=off hom=off adam"
    means = [e["mean_psnr"] for e in data["ranked"]]
    assert means == sorted(means, reverse=True)
    assert len(data["homeostasis_sweep"]["ranked"]) == 13
    assert "ranks" in result.output


def test_engine_throughput_quick_reports_ratios(tmp_path):
    out = tmp_path / "t.json"
    result = invoke(engine_throughput.main, ["--quick", "--no-progress", "--cpu-only", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [(r["device"], r["hidden"], r["batch"]) for r in data["rows"]] == [("cpu", 64, 1), ("cpu", 64, 48)]
    for r in data["rows"]:
        assert r["zor_train"] > 0 and r["mlp_train"] > 0
        assert r["zor_vs_mlp_train"] == pytest.approx(r["zor_train"] / r["mlp_train"])


@pytest.mark.parametrize("main, args, message", [
    (fashion_fewshot.main, ["--scales", "ten"], "comma-separated positive integers"),
    (fashion_fewshot.main, ["--quick", "--scales", "15"], "multiple of 10"),
    (fashion_fewshot.main, ["--methods", "zor,svm"], "unknown method"),
    (fashion_fewshot.main, ["--seeds", "0"], "0"),
    (fashion_fewshot.main, ["--json", "/nonexistent-folder/x.json"], "does not exist"),
    (rule_variants.main, ["--quick", "--scales", "10,100", "--steps", "1,2,3"], "one per scale"),
    (engine_throughput.main, ["--batches", "0"], "positive integers"),
])
def test_usage_errors_exit_2_with_a_helpful_message(main, args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert message in result.output


def test_budget_doubles_per_tenfold_data_up_to_eight_times():
    assert [fashion_fewshot.budget_for(n, 1.0) for n in (10, 100, 1000, 10_000, 60_000)] == [1, 2, 4, 8, 8]
    assert fashion_fewshot.budget_for(50, 0.5) == 0.5


def test_balanced_subset_draws_evenly_per_class():
    import numpy as np

    labels = np.repeat(np.arange(10), 5)
    idx = balanced_subset(labels, 20, seed=3)
    assert np.bincount(labels[idx], minlength=10).tolist() == [2] * 10
    assert balanced_subset(labels, 50, seed=0).tolist() == list(range(50))       # the whole set
    with pytest.raises(ConfigError):
        balanced_subset(labels, 25, seed=0)


def test_helpers_format_and_parse():
    assert parse_int_list("10, 1_000", "--scales") == [10, 1000]
    with pytest.raises(ConfigError):
        parse_int_list("10,-1", "--scales")
    assert to_jsonable({"a": float("inf"), "b": [1.5]}) == {"a": None, "b": [1.5]}
    assert format_table([{"m": "zor", "v": 1.234}], ["m", "v"]).splitlines()[-1] == "zor  1.23"


def _benchmark_commands():
    """(name, main) of every module in benchmarks/ whose ``main`` is a click command."""
    import importlib
    import pkgutil

    import click

    import benchmarks

    found = []
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.ispkg:
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if isinstance(getattr(module, "main", None), click.Command):
            found.append((info.name, module.main))
    return found


def test_every_benchmark_answers_help():
    commands = _benchmark_commands()
    assert {"fashion_fewshot", "classification", "translation", "sparse_inference"} <= {n for n, _ in commands}
    for name, main in commands:
        result = CliRunner().invoke(main, ["--help"], prog_name=f"python -m benchmarks.{name}")
        assert result.exit_code == 0, (name, result.output)
        assert f"python -m benchmarks.{name}" in result.output


def test_a_benchmark_runs_as_a_module_with_help():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "benchmarks.depth", "--help"], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "--threads" in result.stdout and "default: 1" in result.stdout
