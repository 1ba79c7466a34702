"""Device profiles and detection from recorded /proc/cpuinfo texts (tests/fixtures/cpuinfo)."""

from pathlib import Path

import pytest
from zor.devices import PROFILES, Int8Recipe, Profile, detect, get, names, parse_cpuinfo

from zor.common.errors import DeviceError, ZorError

FIXTURES = Path(__file__).parent / "fixtures" / "cpuinfo"


def cpuinfo(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize("fixture, profile, why", [
    ("x86-64-avx2-epyc-this-machine.txt", "x86-64-avx2", "lacks avx512_vnni, avx_vnni"),
    ("x86-64-avx512-vnni-cascadelake.txt", "x86-64-avx512-vnni", "has avx512_vnni"),
    ("x86-64-avx-vnni-alderlake.txt", "x86-64-avx512-vnni", "has avx_vnni"),
    ("rpi3-aarch64.txt", "rpi3", "CPU part 0xd03 (Cortex-A53)"),
    ("rpi3-armv7l.txt", "rpi3", "CPU part 0xd03 (Cortex-A53)"),
    ("rpi4.txt", "rpi4", "CPU part 0xd08 (Cortex-A72)"),
    ("rpi5.txt", "rpi5", "CPU part 0xd0b (Cortex-A76)"),
    ("jetson-orin-nano.txt", "jetson-orin-nano", "CPU part 0xd42 (Cortex-A78AE)"),
])
def test_each_recorded_cpuinfo_detects_its_profile(fixture, profile, why):
    d = detect(cpuinfo(fixture), board="")
    assert d.profile.name == profile
    assert d.matched is True
    assert why in d.reason


def test_raspberry_pi_board_model_line_confirms_the_core():
    d = detect(cpuinfo("rpi5.txt"), board="")
    assert d.cpu.board == "Raspberry Pi 5 Model B Rev 1.0"
    assert "board 'Raspberry Pi 5 Model B Rev 1.0' confirms" in d.reason


def test_jetson_board_from_device_tree_confirms():
    board = (FIXTURES / "jetson-orin-nano.model").read_text()
    d = detect(cpuinfo("jetson-orin-nano.txt"), board=board)
    assert d.profile.name == "jetson-orin-nano"
    assert "confirms" in d.reason


def test_board_alone_decides_when_the_part_is_unknown():
    text = cpuinfo("rpi5.txt").replace("0xd0b", "0xd99")
    d = detect(text, board="")
    assert d.profile.name == "rpi5" and d.matched
    assert "board 'Raspberry Pi 5 Model B Rev 1.0' matches rpi5" in d.reason


def test_unknown_arm_core_falls_back_to_generic_with_the_reason():
    d = detect(cpuinfo("neoverse-n1-graviton2.txt"), board="")
    assert d.profile.name == "generic" and d.matched is False
    assert "0xd0c (Neoverse-N1) matches no profile" in d.reason
    assert "closest by ISA" in d.reason and "rpi5" in d.reason     # it has asimddp


def test_x86_without_avx2_falls_back_to_generic_with_the_reason():
    d = detect(cpuinfo("x86-64-sse-atom.txt"), board="")
    assert d.profile.name == "generic" and not d.matched
    assert "has no AVX2" in d.reason and "sse4_2" in d.reason


def test_text_without_cpu_facts_falls_back_to_generic():
    d = detect("hello: world\n", board="")
    assert d.profile.name == "generic" and not d.matched
    assert "neither x86 'flags' nor ARM" in d.reason


def test_unreadable_cpuinfo_falls_back_to_generic(monkeypatch, tmp_path):
    import zor.devices.detection as det

    monkeypatch.setattr(det, "CPUINFO", tmp_path / "missing")
    d = det.detect()
    assert d.profile.name == "generic" and not d.matched
    assert "cannot read" in d.reason


def test_this_machine_detects_something_with_a_reason():
    d = detect()
    assert d.profile.name in PROFILES and d.reason


def test_parse_cpuinfo_facts():
    rpi5 = parse_cpuinfo(cpuinfo("rpi5.txt"))
    assert (rpi5.arch, rpi5.implementer, rpi5.parts, rpi5.cores) == ("aarch64", "0x41", ("0xd0b",), 4)
    assert rpi5.isa == ("dotprod", "neon")
    rpi4 = parse_cpuinfo(cpuinfo("rpi4.txt"))
    assert rpi4.isa == ("neon",)                                      # A72: no dot product
    v7 = parse_cpuinfo(cpuinfo("rpi3-armv7l.txt"))
    assert v7.arch == "arm" and "neon" in v7.isa
    jet = parse_cpuinfo(cpuinfo("jetson-orin-nano.txt"))
    assert jet.cores == 6 and jet.model_name == "Cortex-A78AE"
    csl = parse_cpuinfo(cpuinfo("x86-64-avx512-vnni-cascadelake.txt"))
    assert csl.arch == "x86_64" and "avx512_vnni" in csl.isa and csl.cores == 2


def test_required_profiles_exist():
    for name in ("x86-64-avx2", "x86-64-avx512-vnni", "rpi3", "rpi4", "rpi5", "jetson-orin-nano", "generic"):
        assert get(name).name == name
    assert names()[0] == "generic"


def test_unknown_profile_names_the_known_ones():
    with pytest.raises(DeviceError) as info:
        get("rpi9")
    assert isinstance(info.value, ZorError)
    assert "'rpi9'" in str(info.value) and "rpi5" in str(info.value) and "expected one of" in str(info.value)
    with pytest.raises(DeviceError):
        get(None)


def test_profile_facts_match_the_cores():
    assert get("rpi3").memory_mb == 1024 and get("rpi3").cores == 4
    assert "dotprod" in get("rpi5").isa and "dotprod" not in get("rpi4").isa
    assert get("jetson-orin-nano").providers[0] == "CUDAExecutionProvider"
    assert get("jetson-orin-nano").providers[-1] == "CPUExecutionProvider"


def test_int8_recipes_follow_the_cited_reasons():
    # x86 without VNNI: u8×s8 through VPMADDUBSW saturates int16 → reduce_range.
    assert get("x86-64-avx2").int8 == Int8Recipe("QDQ", "u8", "s8", True, True)
    # VNNI accumulates in int32: full range.
    assert get("x86-64-avx512-vnni").int8.reduce_range is False
    # Arm: S8S8 QDQ, no saturation issue.
    for name in ("rpi3", "rpi4", "rpi5", "jetson-orin-nano"):
        r = get(name).int8
        assert (r.format, r.activation_type, r.weight_type, r.reduce_range) == ("QDQ", "s8", "s8", False)


def test_every_profile_says_how_its_int8_verdict_is_known():
    for p in PROFILES.values():
        assert p.int8_evidence, p.name
        if p.int8_pays is not None:
            assert p.int8_evidence.startswith(("measured", "expected")), p.name
        assert 0.0 <= p.sparse_break_even <= 1.0


def test_profile_and_recipe_validate_their_fields():
    with pytest.raises(DeviceError, match="graph_optimization expected one of"):
        Profile(name="x", description="", arch="x86_64", graph_optimization="max")
    with pytest.raises(DeviceError, match="expected 'u8' or 's8'"):
        Int8Recipe(activation_type="int8")
    with pytest.raises(DeviceError, match="expected 'QDQ' or 'QOperator'"):
        Int8Recipe(format="qdq")
    with pytest.raises(DeviceError, match="sparse_break_even"):
        Profile(name="x", description="", arch="any", sparse_break_even=2.0)


def test_to_dict_is_plain_data():
    d = get("rpi5").to_dict()
    assert d["isa"] == ["neon", "dotprod"] and d["int8"]["activation_type"] == "s8"
    assert d["providers"] == ["CPUExecutionProvider"]
