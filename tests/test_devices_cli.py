"""zor-devices list | show NAME | detect, through click's CliRunner."""

import json
from pathlib import Path

from click.testing import CliRunner
from zor.devices import PROFILES
from zor.devices.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_list_shows_every_profile_with_its_recipe():
    r = invoke("list")
    assert r.exit_code == 0, r.output
    for name in PROFILES:
        assert name in r.output
    assert "QDQ s8/s8 per-channel" in r.output and "reduce_range" in r.output


def test_show_prints_fields_and_json():
    r = invoke("show", "rpi3")
    assert r.exit_code == 0
    assert "memory_mb" in r.output and "1024" in r.output
    r = invoke("show", "rpi5", "--json")
    d = json.loads(r.output)
    assert d["name"] == "rpi5" and d["int8"]["weight_type"] == "s8" and "dotprod" in d["isa"]


def test_show_unknown_name_is_a_usage_error():
    r = invoke("show", "pi7")
    assert r.exit_code == 2
    assert "unknown device profile 'pi7'" in r.output and "expected one of" in r.output


def test_detect_from_recorded_cpuinfo():
    r = invoke("detect", "--cpuinfo", str(FIXTURES / "rpi4.txt"))
    assert r.exit_code == 0
    assert "profile: rpi4" in r.output and "0xd08" in r.output
    r = invoke("detect", "--cpuinfo", str(FIXTURES / "neoverse-n1-graviton2.txt"), "--json")
    d = json.loads(r.output)
    assert d["profile"] == "generic" and d["matched"] is False and "matches no profile" in d["reason"]


def test_detect_with_board_text():
    r = invoke("detect", "--cpuinfo", str(FIXTURES / "jetson-orin-nano.txt"), "--board", "NVIDIA Jetson Orin Nano")
    assert r.exit_code == 0 and "jetson-orin-nano" in r.output and "confirms" in r.output


def test_detect_this_machine_and_missing_file():
    r = invoke("detect")
    assert r.exit_code == 0 and "profile:" in r.output and "reason:" in r.output
    r = invoke("detect", "--cpuinfo", "/nonexistent/cpuinfo")
    assert r.exit_code == 2
