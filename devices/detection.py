"""Detect the current machine's profile from ``/proc/cpuinfo`` (and the board model).

x86: the ``flags`` line (``avx2``, ``avx512_vnni``, ``avx_vnni``, ...) is matched
against each profile's ``cpu_match`` rules ``flags_all`` / ``flags_any`` /
``flags_none``. ARM: the ``CPU implementer`` / ``CPU part`` ids (0x41 = Arm Ltd;
Cortex-A53 0xd03, A72 0xd08, A76 0xd0b, A78AE 0xd42) against ``implementer`` /
``part``; ``/proc/device-tree/model`` (or the ``Model`` line Raspberry Pi kernels add
to cpuinfo) names the board where readable and is matched against ``board``.

Detection never fails: when nothing matches it returns the ``generic`` profile with
the reason (which facts were found, which profiles were closest).

Example:
    >>> d = detect("processor : 0\\nflags : fpu sse2 avx avx2 fma\\n")
    >>> d.profile.name, d.matched
    ('x86-64-avx2', True)
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .profiles import PROFILES, Profile

__all__ = ["CpuInfo", "Detection", "ARM_PARTS", "parse_cpuinfo", "detect", "read_cpuinfo", "read_board_model"]

CPUINFO = Path("/proc/cpuinfo")
DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

# Arm Ltd (implementer 0x41) part ids, from Arm's Technical Reference Manuals (MIDR_EL1.PartNum).
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE", "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
    "0xd49": "Neoverse-N2", "0xd4b": "Cortex-A78C",
}
# ARM feature names in cpuinfo → our ISA names (asimd is NEON on AArch64).
_ARM_FEATURES = {"asimd": "neon", "neon": "neon", "asimddp": "dotprod", "i8mm": "i8mm"}
_X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class CpuInfo:
    """What cpuinfo says about the CPU, normalised."""

    arch: str                                  # "x86_64", "aarch64", "arm" or "unknown"
    model_name: str = ""                       # x86 "model name", or the ARM core's name
    flags: frozenset = frozenset()             # x86 flags or ARM Features, as written
    isa: tuple = ()                            # our ISA names found (avx2, avx512_vnni, neon, dotprod, i8mm, ...)
    implementer: Optional[str] = None          # ARM "CPU implementer", e.g. "0x41"
    parts: tuple = ()                          # ARM "CPU part" ids, distinct, e.g. ("0xd0b",)
    cores: int = 0                             # logical processors listed
    board: str = ""                            # board model (device tree or cpuinfo "Model")


@dataclass(frozen=True)
class Detection:
    """The detected profile and why; other attributes read through to the profile."""

    profile: Profile
    reason: str
    matched: bool                              # False: fell back to generic
    cpu: CpuInfo = field(default_factory=lambda: CpuInfo(arch="unknown"))

    def __getattr__(self, name: str):
        # A Detection reads like the profile it found (``detect().int8``, ``detect().name``),
        # so code that wants "the profile of this machine" can use it directly.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.profile, name)

    def to_dict(self) -> dict:
        return {"profile": self.profile.name, "matched": self.matched, "reason": self.reason,
                "cpu": {"arch": self.cpu.arch, "model_name": self.cpu.model_name, "isa": list(self.cpu.isa),
                        "implementer": self.cpu.implementer, "parts": list(self.cpu.parts),
                        "cores": self.cpu.cores, "board": self.cpu.board}}


def _norm_hex(value: str) -> str:
    value = value.strip().lower()
    try:
        return hex(int(value, 16)) if value.startswith("0x") else hex(int(value))
    except ValueError:
        return value


def parse_cpuinfo(text: str, board: str = "") -> CpuInfo:
    """Parse the text of ``/proc/cpuinfo`` (x86 or ARM) into a :class:`CpuInfo`."""
    fields: dict[str, list[str]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), []).append(value.strip())
    cores = len(fields.get("processor", []))
    implementer = _norm_hex(fields["cpu implementer"][0]) if "cpu implementer" in fields else None
    parts = tuple(dict.fromkeys(_norm_hex(p) for p in fields.get("cpu part", [])))
    board = board or (fields.get("model", [""])[-1] if implementer else "")
    if implementer is not None:
        flags = frozenset(fields.get("features", [""])[0].split())
        isa = tuple(sorted({_ARM_FEATURES[f] for f in flags if f in _ARM_FEATURES}))
        arch_field = fields.get("cpu architecture", ["8"])[0]
        v7 = "v7" in " ".join(fields.get("model name", [])) or arch_field.strip() == "7"
        arch = "arm" if v7 else "aarch64"
        model_name = " / ".join(ARM_PARTS.get(p, f"part {p}") for p in parts)
        return CpuInfo(arch=arch, model_name=model_name, flags=flags, isa=isa, implementer=implementer,
                       parts=parts, cores=cores, board=board)
    if "flags" in fields:
        flags = frozenset(fields["flags"][0].split())
        isa = tuple(f for f in _X86_FEATURES if f in flags)
        return CpuInfo(arch="x86_64", model_name=fields.get("model name", [""])[0], flags=flags, isa=isa,
                       cores=cores, board=board)
    return CpuInfo(arch="unknown", cores=cores, board=board)


def _x86_match(rule: dict, flags: frozenset) -> bool:
    if not rule or not any(k in rule for k in ("flags_all", "flags_any", "flags_none")):
        return False
    if not all(f in flags for f in rule.get("flags_all", [])):
        return False
    if rule.get("flags_any") and not any(f in flags for f in rule["flags_any"]):
        return False
    return not any(f in flags for f in rule.get("flags_none", []))


def _detect_x86(cpu: CpuInfo) -> Detection:
    for p in PROFILES.values():
        if _x86_match(p.cpu_match, cpu.flags):
            rule = p.cpu_match
            why = []
            if rule.get("flags_all"):
                why.append("has " + ", ".join(rule["flags_all"]))
            if rule.get("flags_any"):
                why.append("has " + " or ".join(f for f in rule["flags_any"] if f in cpu.flags))
            if rule.get("flags_none"):
                why.append("lacks " + ", ".join(rule["flags_none"]))
            return Detection(p, f"x86-64 CPU {cpu.model_name or '(unnamed)'} " + "; ".join(why), True, cpu)
    return Detection(PROFILES["generic"],
                     f"x86-64 CPU {cpu.model_name or '(unnamed)'} has no AVX2 (ISA found: "
                     f"{', '.join(cpu.isa) or 'none of ' + ', '.join(_X86_FEATURES)}): no x86 profile fits, "
                     "using generic", False, cpu)


def _detect_arm(cpu: CpuInfo) -> Detection:
    by_board = [p for p in PROFILES.values()
                if cpu.board and any(b.lower() in cpu.board.lower() for b in p.cpu_match.get("board", []))]
    by_part = [p for p in PROFILES.values()
               if p.cpu_match.get("implementer") == cpu.implementer
               and any(part in p.cpu_match.get("part", []) for part in cpu.parts)]
    names = cpu.model_name or "unknown core"
    if by_part:
        p = by_part[0]
        reason = f"ARM implementer {cpu.implementer}, CPU part {', '.join(cpu.parts)} ({names}) matches {p.name}"
        if by_board and by_board[0] is p:
            reason += f"; board {cpu.board!r} confirms"
        elif cpu.board:
            reason += f"; board {cpu.board!r} is not one this profile names (same core, other board)"
        return Detection(p, reason, True, cpu)
    if by_board:
        p = by_board[0]
        return Detection(p, f"board {cpu.board!r} matches {p.name} (CPU part {', '.join(cpu.parts) or 'missing'} "
                            "was not recognised)", True, cpu)
    known = ", ".join(f"{part} {ARM_PARTS.get(part, '')} → {p.name}" for p in PROFILES.values()
                      for part in p.cpu_match.get("part", []))
    closest = "rpi5" if "dotprod" in cpu.isa else "rpi4"
    return Detection(PROFILES["generic"],
                     f"ARM implementer {cpu.implementer}, CPU part {', '.join(cpu.parts) or 'missing'} ({names}) "
                     f"matches no profile (known: {known}); using generic (closest by ISA "
                     f"{', '.join(cpu.isa) or 'none'}: {closest}, pass device={closest!r} to use it)", False, cpu)


def read_cpuinfo() -> Optional[str]:
    """The text of /proc/cpuinfo, or None where it cannot be read (not Linux)."""
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return None


def read_board_model() -> str:
    """The device-tree board model (e.g. "Raspberry Pi 5 Model B Rev 1.0"), or ""."""
    try:
        return DEVICE_TREE_MODEL.read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def detect(cpuinfo: Optional[str] = None, board: Optional[str] = None) -> Detection:
    """The profile of the machine described by ``cpuinfo`` text (default: this machine).

    ``board`` is the board model; by default read from the device tree when
    ``cpuinfo`` is not given. Falls back to ``generic`` with the reason.
    """
    if cpuinfo is None:
        cpuinfo = read_cpuinfo()
        if board is None:
            board = read_board_model()
        if cpuinfo is None:
            return Detection(PROFILES["generic"],
                             f"cannot read {CPUINFO} on this {platform.system() or 'unknown'} "
                             f"{platform.machine() or ''} system: using generic", False,
                             CpuInfo(arch=platform.machine() or "unknown"))
    cpu = parse_cpuinfo(cpuinfo, board or "")
    if cpu.implementer is not None:
        return _detect_arm(cpu)
    if cpu.arch == "x86_64":
        return _detect_x86(cpu)
    head = re.sub(r"\s+", " ", cpuinfo.strip())[:80]
    return Detection(PROFILES["generic"],
                     f"cpuinfo has neither x86 'flags' nor ARM 'CPU implementer'/'CPU part' lines "
                     f"(starts {head!r}): using generic", False, cpu)
