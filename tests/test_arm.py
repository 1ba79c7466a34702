"""The ARM path: the runtime on emulated Raspberry Pi cores (benchmarks/arm/emulate.sh).

Two groups:

- fast tests of the pieces, no emulation: the cpuinfo text written from a CPU's
  MIDR/HWCAPs (hand-derived from the Arm and Linux definitions) and its detection,
  the parity rules, the size and report helpers, and every bad-input path of the
  script (missing qemu or mmdebstrap, not root, bad arguments);
- ``@pytest.mark.arm``: one emulated run for cortex-a53 / a72 / a76 (Pi 3 / 4 / 5),
  built or reused through a session fixture, whose figures each test asserts; and an
  interrupted run that must leave no mount and no work folder behind.

What the emulated tests change on the machine, as root (a non-root run skips them,
saying so): missing Debian packages are installed with apt-get (qemu-user-static
binfmt-support mmdebstrap arch-test, about 400 MB installed); binfmt_misc is mounted
where it is not and qemu-aarch64 registered in it (update-binfmts --enable
qemu-aarch64; this stays); an arm64 Debian root (bookworm, python3) with the aarch64
wheels of numpy, onnxruntime and click, about 217 MB, is downloaded into
``~/.cache/zor-arm`` (``ZOR_ARM_CACHE`` or ``XDG_CACHE_HOME`` move it) and reused.

``ZOR_ARM`` switches them: unset (auto) as above, and a skip names exactly what is
missing (no root, no binfmt_misc, packages not installable); ``ZOR_ARM=0`` skips
every emulated test (aarch64 here, the x86 int8 kernels in test_arm_kernels.py)
and installs or downloads nothing; ``ZOR_ARM=require`` (what .ci/run sets once the
packages are in) turns every such skip into a failure.

The int8 checks hold on any x86-64 or aarch64 host: they compare each int8 run with
the int8 graph computed in numpy for its own kernel's sums (benchmarks/arm/qdq.py),
with the bound the export's scales imply, and with its spike budget and max drop;
nothing measured on one CPU's int8 run is a tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from zor.devices import detect

REPO = Path(__file__).resolve().parents[1]
ARM = REPO / "benchmarks" / "arm"
SCRIPT = ARM / "emulate.sh"
CANNOT = 77
CORES = {"cortex-a53": "rpi3", "cortex-a72": "rpi4", "cortex-a76": "rpi5"}
APT_PACKAGES = ["qemu-user-static", "binfmt-support", "mmdebstrap", "arch-test"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"zor_arm_{name}", ARM / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kc = _load("kernel_cpuinfo")
parity = _load("parity")
report = _load("report")


def _skip(reason: str):
    """Skip with ``reason``; a blank reason is a bug of this module (every skip says why)."""
    if not reason.strip():
        raise AssertionError("a skip without a reason: say what is missing")
    pytest.skip(reason)


def _stderr_reason(p: subprocess.CompletedProcess) -> str:
    """What a failed run said (every stderr line, joined), or its exit status when it said nothing."""
    lines = [line.strip() for line in (p.stderr or "").splitlines() if line.strip()]
    return " ".join(lines) if lines else f"exit {p.returncode} without a message on stderr"


def run_script(*args: str, env: dict | None = None, prefix: tuple = (), timeout: int = 60):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*prefix, "bash", str(SCRIPT), *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout)


# ---------------------------------------------------------------------------------------------- cpuinfo text
# MIDR_EL1 = implementer[31:24] variant[23:20] architecture[19:16] part[15:4] revision[3:0].
# The qemu models' values: cortex-a53 0x410fd034, cortex-a72 0x410fd083, cortex-a76 0x414fd0b1.
@pytest.mark.parametrize("midr, hwcap, part, variant, revision, features, profile", [
    (0x410FD034, 0x8FB, "0xd03", "0x0", 4, "fp asimd aes pmull sha1 sha2 crc32 cpuid", "rpi3"),
    (0x410FD083, 0x8FB, "0xd08", "0x0", 3, "fp asimd aes pmull sha1 sha2 crc32 cpuid", "rpi4"),
    # bits 0-1, 3-12, 15, 16, 20: ... atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
    (0x414FD0B1, 0x119FFB, "0xd0b", "0x4", 1,
     "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp", "rpi5"),
])
def test_cpuinfo_text_from_midr_and_hwcaps_detects_the_pi(midr, hwcap, part, variant, revision, features, profile):
    ident = {"implementer": f"{midr >> 24:#x}", "variant": f"{midr >> 20 & 0xF:#x}", "part": f"{midr >> 4 & 0xFFF:#05x}",
             "revision": midr & 0xF, "features": kc.features(hwcap, 0), "cntfrq_hz": 54_000_000}
    assert (ident["part"], ident["variant"], ident["revision"]) == (part, variant, revision)
    assert " ".join(ident["features"]) == features
    text = kc.cpuinfo_text(ident, 2)
    # the kernel's layout (arch/arm64/kernel/cpuinfo.c), 54 MHz timer → BogoMIPS 108.00 as on a Pi 4/5
    assert text.startswith(f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
                           f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\n"
                           f"CPU revision\t: {revision}\n\nprocessor\t: 1\n")
    d = detect(text, board="")
    assert (d.profile.name, d.matched, d.cpu.cores) == (profile, True, 2)
    assert ("dotprod" in d.cpu.isa) == (profile == "rpi5")


def test_feature_names_follow_the_kernel_bit_order():
    assert kc.features(1 << 20, 0) == ["asimddp"]
    assert kc.features(0, (1 << 13) | (1 << 23)) == ["i8mm", "sme"]       # HWCAP2_I8MM, HWCAP2_SME
    assert kc.features(0, 1 << 40) == ["hwcap2_bit40"]
    assert len(kc.HWCAP_NAMES) == 32 and kc.HWCAP_NAMES[0] == "fp" and kc.HWCAP_NAMES[31] == "pacg"


def test_reading_midr_off_aarch64_says_why():
    if platform.machine() == "aarch64":
        _skip("this host is aarch64: reading MIDR_EL1 works here")
    with pytest.raises(OSError, match="needs an aarch64 CPU, this is"):
        kc.read_midr()
    p = subprocess.run([sys.executable, str(ARM / "kernel_cpuinfo.py")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "cannot read the CPU's identity" in p.stderr


# ---------------------------------------------------------------------------------------------- parity rules
def _run(out, spikes, charge=None, theta=None):
    d = {"output": np.asarray(out, np.float32), "spikes_0": np.asarray(spikes, bool)}
    if charge is not None:
        d["charge_0"] = np.asarray(charge, np.float32)
        d["threshold_0"] = np.asarray(theta, np.float32)
    return d


def test_float_parity_hand_derived():
    host = _run([[0.5, 0.25]], [[True, False]], charge=[[0.9, 0.3000001]], theta=[0.3, 0.3])
    same = parity.float_parity(host, _run([[0.5, 0.25]], [[True, False]]), 1e-5)
    assert same["bit_exact"] and same["passed"] and same["spikes_compared"] == 2
    near = parity.float_parity(host, _run([[0.500008, 0.25]], [[True, False]]), 1e-5)
    assert not near["bit_exact"] and near["passed"]
    assert near["output_max_abs"] == pytest.approx(8e-6, abs=1e-7)
    far = parity.float_parity(host, _run([[0.50002, 0.25]], [[True, False]]), 1e-5)
    assert not far["passed"]
    tie = parity.float_parity(host, _run([[0.5, 0.25]], [[True, True]]), 1e-5)   # |0.3000001 − 0.3| ≤ 1e-5
    assert (tie["spike_mismatches"], tie["spike_mismatches_at_ties"], tie["passed"]) == (1, 1, True)
    flip = parity.float_parity(host, _run([[0.5, 0.25]], [[False, False]]), 1e-5)  # |0.9 − 0.3| is no tie
    assert (flip["spike_mismatches"], flip["spike_mismatches_at_ties"], flip["passed"]) == (1, 0, False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=16), st.floats(0, 1e-3))
def test_float_parity_passes_exactly_when_within_atol(values, shift):
    host = _run([values], [[True] * len(values)])
    arm = _run([[v + shift for v in values]], [[True] * len(values)])
    r = parity.float_parity(host, arm, 1e-5)
    err = float(np.max(np.abs(arm["output"].astype(np.float64) - host["output"].astype(np.float64))))
    assert r["passed"] == (err <= 1e-5)
    assert r["output_max_abs"] == pytest.approx(err)


def test_int8_parity_against_the_reference_the_bound_and_the_budgets():
    x = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    f32 = {"output": x.copy(), "spikes_0": np.ones((1, 4), bool), "spikes_1": np.array([[True, True, False, False]])}
    tol = {"spike_budget": 0.75, "max_drop": 5.0, "metric": "seed_accuracy", "reference": "input",
           "arithmetic_atol": 1e-5}
    good = {**f32, "output": x + np.float32(0.05)}              # metric 100·(1 − 0.05) = 95: drop 5.0 points
    bound = np.full((1, 4), 0.1)
    r = parity.int8_parity(good, f32, good, bound, x, tol, "int32", host_int8=good)
    assert r["passed"], r["failures"]
    assert r["metric_float32"] == pytest.approx(100.0) and r["metric_drop"] == pytest.approx(5.0, abs=1e-5)
    assert r["spike_agreement_vs_host_float32"] == [1.0, 1.0] and r["bit_exact_vs_host_int8"]
    assert r["output_share_of_bound"] == pytest.approx(0.5) and r["output_over_bound"] == 0.0
    bad = {**f32, "output": x + np.float32(0.2), "spikes_1": np.array([[False, True, True, False]])}
    r = parity.int8_parity(bad, f32, good, bound, x, tol, "int32", host_int8=good)
    assert not r["passed"]
    text = "; ".join(r["failures"])
    assert "does not reproduce the int32 arithmetic of the int8 graph: max |Δoutput| 0.15 > 1e-05" in text
    assert "by more than the quantisation bound (by up to 0.1 at 4 values)" in text
    assert "layer 1: spike agreement 50.000 % < budget 75 %" in text
    assert "metric drop 20.000 > max drop 5" in text
    assert "layer 1: spike agreement with the host int8 run 50.000 % < 50 %" not in text      # 1 − 2·0.25 = 50 %
    assert r["output_max_abs_vs_host_int8"] == pytest.approx(0.15)


# ---------------------------------------------------------------------------------------------- report helpers
def test_installed_sizes_sum_the_record_files(tmp_path):
    site = tmp_path / "site"
    (site / "pkg").mkdir(parents=True)
    (site / "pkg" / "a.py").write_bytes(b"x" * 100)
    (site / "pkg" / "b.so").write_bytes(b"y" * 2000)
    info = site / "onnxruntime-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime\nVersion: 1.2.3\n")
    (info / "RECORD").write_text("pkg/a.py,sha256=x,100\npkg/b.so,sha256=y,2000\n"
                                 "onnxruntime-1.2.3.dist-info/METADATA,,\nmissing.py,sha256=z,7\n")
    meta_bytes = (info / "METADATA").stat().st_size
    sizes = report.installed_sizes(site)
    assert sizes["distributions"]["onnxruntime"] == {"version": "1.2.3", "bytes": 2100 + meta_bytes, "files": 3}
    assert sizes["runtime_bytes"] == 2100 + meta_bytes == sizes["all_bytes"]


def test_report_table_and_missing_core(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "timings.txt").write_text("setup_s 1.5\nroot_state reused\ntotal_s 9.0\n")
    checks = [{"name": "fewshot-float32", "passed": True, "reason": "", "output_max_abs": 0.0, "spike_mismatches": 0},
              {"name": "fewshot-int8", "passed": True, "reason": "", "output_max_abs_vs_host_int8": 0.01,
               "spike_agreement_vs_host_float32": [1.0, 0.995, 1.0], "metric_drop": 0.02},
              {"name": "stateful-stream", "passed": True, "reason": "", "output_max_abs": 0.0}]
    (tmp_path / "out" / "cortex-a72.json").write_text(json.dumps(
        {"core": "cortex-a72", "expected_profile": "rpi4", "detected_profile": "rpi4", "passed": True,
         "checks": checks, "cpu": {"features": ["fp", "asimd", "aes", "cpuid"]}}))
    rep = report.build_report(tmp_path, tmp_path, ["cortex-a72", "cortex-a76"])
    assert rep["passed"] is False and rep["cores"]["cortex-a76"]["missing"]
    a72 = rep["cores"]["cortex-a72"]["features_vs_genuine_pi"]
    assert a72 == {"emulated_only": ["aes"], "genuine_only": ["crc32", "evtstrm"]}     # vs tests/fixtures rpi4.txt
    table = report.format_table(rep)
    assert "cortex-a72  rpi4     rpi4      0" in table and "99.50 %" in table and "3/3" in table
    assert "cortex-a76: FAILED: no report" in table
    assert "not Raspberry Pi speed figures" in table
    result = CliRunner().invoke(report.main, ["--work", str(tmp_path), "--root", str(tmp_path), "--cores", "cortex-a72"])
    assert result.exit_code == 0, result.output


# ---------------------------------------------------------------------------------------------- bad input
def _linux_x86():
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        _skip(f"emulate.sh's prerequisite checks are for x86-64 Linux, this is {platform.system()} "
              f"{platform.machine()}")


def test_help_and_usage_errors_exit_2():
    p = run_script("--help")
    assert p.returncode == 0 and "Usage (as root)" in p.stdout and "Exit status" in p.stdout
    p = run_script("--frobnicate")
    assert p.returncode == 2 and "unknown argument '--frobnicate'" in p.stderr
    p = run_script("--cores", "cortex-a9")
    assert p.returncode == 2 and "unknown core 'cortex-a9'" in p.stderr and "cortex-a72" in p.stderr
    p = run_script("--json", "/nonexistent-dir/r.json")
    assert p.returncode == 2 and "folder /nonexistent-dir does not exist" in p.stderr
    p = run_script("--cache")
    assert p.returncode == 2 and "--cache needs a folder" in p.stderr


@pytest.mark.parametrize("var, name, hint", [
    ("ZOR_ARM_QEMU", "zor-no-such-qemu", "apt-get install qemu-user-static"),
    ("ZOR_ARM_MMDEBSTRAP", "zor-no-such-mmdebstrap", "apt-get install mmdebstrap"),
])
def test_missing_tool_says_what_and_how_and_exits_77(var, name, hint):
    _linux_x86()
    p = run_script("--preflight", env={var: name})
    assert p.returncode == CANNOT, p.stderr
    assert "cannot run here, missing:" in p.stderr
    assert f"  - {name}: {hint}" in p.stderr
    assert "apt-get install -y --no-install-recommends qemu-user-static binfmt-support mmdebstrap arch-test" in p.stderr


def test_not_root_says_so_and_exits_77():
    _linux_x86()
    prefix: tuple = ()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            _skip("running as root and setpriv (util-linux) is missing: cannot drop to a non-root user")
        prefix = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    p = run_script("--preflight", prefix=prefix, env={"HOME": "/tmp"})
    assert p.returncode == CANNOT, p.stderr
    assert "  - root: mmdebstrap --mode=root, chroot and bind mounts need uid 0" in p.stderr


def test_host_python_without_the_exporter_says_so_and_exits_77(tmp_path):
    _linux_x86()
    pre = run_script("--preflight")
    if pre.returncode == CANNOT:
        _skip(f"the machine itself cannot run emulate.sh, so the host-Python check is not reached: "
              f"{_stderr_reason(pre)}")
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    p = run_script("--python", str(fake), "--cores", "cortex-a72")
    assert p.returncode == CANNOT, p.stderr
    assert f"no host Python with the exporter (torch, onnx, onnxruntime, zor.export) at '{fake}'" in p.stderr


def test_every_skip_names_its_reason():
    """No skip of this module can print a blank reason: each goes through _skip or _cannot,
    which refuse one, and a run that said nothing is named by its exit status."""
    import ast

    tree = ast.parse(Path(__file__).read_text())
    callers = {fn.name for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
               for node in ast.walk(fn) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr == "skip" and getattr(node.func.value, "id", "") == "pytest"}
    assert callers == {"_skip"}
    for blank in ("", "   ", "\n"):
        with pytest.raises(AssertionError, match="reason"):
            _skip(blank)
        with pytest.raises(AssertionError, match="reason"):
            _cannot(blank)
    silent = subprocess.CompletedProcess(["x"], 77, "", "  \n")
    assert _stderr_reason(silent) == "exit 77 without a message on stderr"
    said = subprocess.CompletedProcess(["x"], 77, "", "emulate.sh: cannot run here, missing:\n  - root: uid 0\n"
                                       "  (all at once, as root: apt-get install ...)\n")
    assert _stderr_reason(said) == ("emulate.sh: cannot run here, missing: - root: uid 0 "
                                    "(all at once, as root: apt-get install ...)")


# ---------------------------------------------------------------------------------------------- emulated runs
def _cannot(reason: str):
    """Skip (or, with ZOR_ARM=require, fail) because the machine cannot run the emulation."""
    if not reason.strip():
        raise AssertionError("cannot run the ARM emulation, but no reason given: say what is missing")
    if os.environ.get("ZOR_ARM", "").lower() == "require":
        pytest.fail(f"ZOR_ARM=require but this machine cannot run the ARM emulation: {reason}")
    _skip(f"ARM emulation cannot run on this machine: {reason}")


def _ensure_prerequisites() -> None:
    """As root with apt-get: install the Debian packages the script needs when missing."""
    missing = [t for t in ("qemu-aarch64-static", "mmdebstrap", "update-binfmts") if not shutil.which(t)]
    if not missing or os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if p.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if p.returncode != 0:
        _cannot(f"{', '.join(missing)} missing and the packages are not installable "
                f"(apt-get install {' '.join(APT_PACKAGES)}: {_stderr_reason(p)[-500:]})")


@pytest.fixture(scope="session")
def arm_run(tmp_path_factory):
    """One emulated run over the three cores (root and exports cached between runs)."""
    if os.environ.get("ZOR_ARM", "").lower() in ("0", "off", "no"):
        _skip("ARM emulation tests disabled by ZOR_ARM=0 (unset it to run them: as root they install "
              "qemu-user-static binfmt-support mmdebstrap arch-test and build a ~217 MB arm64 root in ~/.cache/zor-arm)")
    _linux_x86()
    _ensure_prerequisites()
    out = tmp_path_factory.mktemp("arm") / "report.json"
    t = time.perf_counter()
    p = run_script("--json", str(out), timeout=900)
    seconds = time.perf_counter() - t
    sys.stdout.write(p.stdout)
    if p.returncode == CANNOT:
        _cannot(_stderr_reason(p)[-1500:])
    assert out.is_file(), f"emulate.sh exit {p.returncode} wrote no report:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    rep = json.loads(out.read_text())
    rep["_wall_s"], rep["_rc"], rep["_stderr"] = seconds, p.returncode, p.stderr
    return rep


def _check(rep: dict, core: str, name: str) -> dict:
    r = rep["cores"][core]
    return next(c for c in r["checks"] if c["name"] == name)


@pytest.mark.arm
def test_run_passed_and_left_no_mounts(arm_run):
    assert arm_run["_rc"] == 0, arm_run["_stderr"][-2000:]
    assert arm_run["passed"] is True
    assert set(arm_run["cores"]) == set(CORES)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "zor-arm" not in mounts and "/mnt/work" not in mounts
    t = arm_run["timings"]       # recorded for the benchmark (benchmarks/arm_emulation.py), not judged here
    assert {t["root_state"], t["wheel_state"], t["fixtures_state"]} <= {"built", "reused"}
    assert {f"core_{c}_s" for c in CORES} <= set(t) and t["total_s"] >= t["setup_s"] > 0


@pytest.mark.arm
@pytest.mark.parametrize("core", list(CORES))
def test_detects_the_pi_profile_from_the_emulated_cpu(arm_run, core):
    r = arm_run["cores"][core]
    assert r["qemu_cpu"] == core
    assert r["detected_profile"] == CORES[core]
    assert _check(arm_run, core, "cpu-identity")["cpu"]["part"] == {"rpi3": "0xd03", "rpi4": "0xd08",
                                                                     "rpi5": "0xd0b"}[CORES[core]]
    assert _check(arm_run, core, "model-auto-profile")["profile"] == CORES[core]
    assert _check(arm_run, core, "zor-devices-cli")["profile"] == CORES[core]
    assert r["onnxruntime_cpuinfo"] == "initialised"
    # a Pi has no SME; qemu's default 'max' model has (and gives wrong int8 under qemu 7.2)
    assert "sme" not in r["cpu"]["features"]
    assert ("asimddp" in r["cpu"]["features"]) == (core == "cortex-a76")


@pytest.mark.arm
@pytest.mark.parametrize("core", list(CORES))
def test_float32_and_stream_match_the_host_within_1e5(arm_run, core):
    f32 = _check(arm_run, core, "fewshot-float32")
    assert f32["passed"] and f32["output_max_abs"] <= 1e-5
    assert f32["spike_mismatches"] == f32["spike_mismatches_at_ties"]
    assert f32["spikes_compared"] == 32 * (784 + 128 + 784)
    sf = _check(arm_run, core, "stateful-stream")
    assert sf["passed"] and sf["steps"] == 6 and sf["output_max_abs"] <= 1e-5
    assert sf["spike_mismatches"] == sf["spike_mismatches_at_ties"]


@pytest.mark.arm
@pytest.mark.parametrize("core", list(CORES))
def test_int8_reproduces_its_kernel_within_the_bound_and_the_budgets(arm_run, core):
    i8 = _check(arm_run, core, "fewshot-int8")
    tol, kernel = i8["tolerance"], i8["kernel"]
    # which kernels ran: aarch64 (SDOT on a76, SMULL/SADALP on a53/a72) sums exactly in int32
    sys.stdout.write(f"{core}: int8 kernel {kernel['machine']} {kernel['isa']} ({kernel['arithmetic']} sums); "
                     f"host {kernel['host']['machine']} {kernel['host']['isa']} "
                     f"({kernel['host']['expected_arithmetic']} sums)\n")
    assert kernel["machine"] == "aarch64" and kernel["arithmetic"] == "int32"
    assert ("dotprod" in kernel["isa"]) == (core == "cortex-a76")
    assert kernel["host"]["reproduces"] == [kernel["host"]["expected_arithmetic"]]
    assert i8["precision"] == "int8" and i8["passed"], i8["failures"]
    assert i8["output_max_abs_vs_reference"] <= tol["arithmetic_atol"] == 1e-5
    assert i8["output_over_bound"] == 0.0 and 0 < i8["output_share_of_bound"] <= 1.0
    assert min(i8["spike_agreement_vs_host_float32"][1:]) >= tol["spike_budget"]
    assert min(i8["spike_agreement_vs_host_int8"][1:]) >= 1 - 2 * (1 - tol["spike_budget"])
    assert i8["metric_drop"] <= tol["max_drop"]
    if kernel["host"]["expected_arithmetic"] == "int32":     # the same sums on both sides
        assert i8["output_max_abs_vs_host_int8"] <= 2 * tol["arithmetic_atol"]
    assert arm_run["models"]["fewshot-int8"]["tolerance"] == tol


@pytest.mark.arm
@pytest.mark.parametrize("core", list(CORES))
def test_runtime_only_and_clis(arm_run, core):
    r = arm_run["cores"][core]
    only = _check(arm_run, core, "runtime-only")
    assert only["passed"] and only["zor_file"].startswith("/opt/zor/")
    assert _check(arm_run, core, "aarch64-python")["machine"] == "aarch64"
    bench = _check(arm_run, core, "zor-bench-cli")
    assert bench["passed"] and "EMULATED" in bench["timings_are"]
    assert list(bench["report"]["models"]) == ["float32", "int8"]
    assert bench["report"]["device"] == CORES[core]
    assert all(c["passed"] for c in r["checks"]) and len(r["checks"]) == 10


@pytest.mark.arm
def test_installed_runtime_size_on_aarch64(arm_run):
    inst = arm_run["installed"]
    d = inst["distributions"]
    assert {"zor-edge", "numpy", "onnxruntime"} <= set(d)
    assert not {"torch", "onnx"} & set(d)
    assert inst["runtime_bytes"] == sum(d[k]["bytes"] for k in ("zor-edge", "numpy", "onnxruntime"))
    assert 20 * 2**20 < inst["runtime_bytes"] < 400 * 2**20


@pytest.mark.arm
def test_interrupted_run_cleans_up(arm_run, tmp_path):
    """SIGTERM while a core is being checked: exit 143, no mount and no work folder left."""
    before = set(Path(os.environ.get("TMPDIR", "/tmp")).glob("zor-arm-work.*"))
    proc = subprocess.Popen(["bash", str(SCRIPT), "--cores", "cortex-a72"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "cortex-a72: started" in line:
                break
        else:
            pytest.fail(f"emulate.sh ended (exit {proc.wait()}) before the core started:\n{''.join(seen)[-3000:]}")
        time.sleep(3.0)                              # into the emulated check
        os.killpg(proc.pid, signal.SIGTERM)          # as a CI cancel or Ctrl-C reaches the whole group
        rc = proc.wait(timeout=120)
        seen.append(proc.stdout.read())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert rc == 143, "".join(seen)
    assert "interrupted (exit 143): mounts and work folder cleaned up" in "".join(seen)
    assert "zor-arm" not in Path("/proc/self/mountinfo").read_text()
    assert set(Path(os.environ.get("TMPDIR", "/tmp")).glob("zor-arm-work.*")) <= before
