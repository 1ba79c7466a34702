"""Device profiles: declarative data about the machines models run on.

A profile names a class of device and what suits it: the CPU architecture and ISA
features, cores and memory, onnxruntime execution providers and thread counts, the
int8 recipe that suits the core, and the spike rate below which the event-driven
(sparse) path pays. The exporter picks its quantization recipe from a profile; the
runtime configures onnxruntime from one. Torch-free (numpy not even needed).

Example:
    >>> from zor.devices import get
    >>> get("rpi4").int8.activation_type
    's8'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from zor.errors import DeviceError

__all__ = ["Int8Recipe", "Profile", "PROFILES", "get", "names"]


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantize to int8 for a core (onnxruntime static quantization terms)."""

    format: str = "QDQ"             # "QDQ" (QuantizeLinear/DequantizeLinear pairs) or "QOperator"
    activation_type: str = "u8"     # "u8" (QUInt8) or "s8" (QInt8) for activations
    weight_type: str = "s8"         # "s8" (QInt8) or "u8" (QUInt8) for weights
    per_channel: bool = True        # one scale per output channel of each weight matrix
    reduce_range: bool = False      # 7-bit weights: avoids u8×s8 int16 saturation without VNNI

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Profile:
    name: str                               # profile id used on the command line
    description: str                        # one line for people
    arch: str                               # "x86_64" or "aarch64"
    isa: tuple = ()                         # ISA features the profile assumes ("avx2", "neon", "dotprod", ...)
    cores: int = 4                          # physical cores
    memory_mb: int = 4096                   # RAM
    providers: tuple = ("CPUExecutionProvider",)  # onnxruntime execution providers, in order of preference
    intra_op_threads: int = 0               # onnxruntime intra-op threads (0 = onnxruntime decides)
    inter_op_threads: int = 1               # onnxruntime inter-op threads
    int8: Int8Recipe = field(default_factory=Int8Recipe)  # the int8 recipe that suits this core
    int8_pays: Optional[bool] = None        # verdict: is int8 faster than float32 here (None = unmeasured)
    sparse_break_even: float = 0.25         # spike rate below which the sparse (event-driven) path pays
    cpu_match: dict = field(default_factory=dict)  # how detection recognises it (see zor.devices.detect)
    notes: str = ""                         # why the choices above (cited reasons)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["isa"] = list(self.isa)
        d["providers"] = list(self.providers)
        return d


_P = [
    Profile(
        name="generic",
        description="Any CPU: portable defaults, no ISA assumptions",
        arch="any",
        cores=1,
        memory_mb=1024,
        # u8 activations / s8 weights run everywhere; reduce_range keeps it safe on x86
        # cores without VNNI, where u8×s8 products are summed in saturating int16.
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=True),
        notes="safe everywhere; slower than a matched profile",
    ),
    Profile(
        name="x86-64-avx2",
        description="x86-64 with AVX2 and FMA, no AVX-512 VNNI (Haswell..Zen 3 class)",
        arch="x86_64",
        isa=("sse4_2", "avx", "avx2", "fma"),
        cores=4,
        memory_mb=8192,
        # Without VNNI, onnxruntime's u8s8 kernels use VPMADDUBSW, whose int16 sums can
        # saturate: reduce_range (7-bit weights) avoids it at a small accuracy cost.
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=True),
        cpu_match={"flags_all": ["avx2"], "flags_none": ["avx512_vnni", "avx_vnni"]},
        notes="u8 activations / s8 weights; reduce_range because of VPMADDUBSW saturation",
    ),
    Profile(
        name="x86-64-avx512-vnni",
        description="x86-64 with AVX-512 VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4)",
        arch="x86_64",
        isa=("avx2", "avx512f", "avx512bw", "avx512_vnni"),
        cores=8,
        memory_mb=16384,
        # VNNI's VPDPBUSD accumulates u8×s8 straight into int32: no saturation, full 8-bit range.
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=False),
        cpu_match={"flags_any": ["avx512_vnni", "avx_vnni"]},
        notes="u8 activations / s8 weights, full range: VNNI accumulates in int32",
    ),
    Profile(
        name="rpi3",
        description="Raspberry Pi 3 class: 4x Cortex-A53, 1 GB",
        arch="aarch64",
        isa=("neon",),
        cores=4,
        memory_mb=1024,
        # Arm cores multiply s8×s8 natively (SMLAL / SDOT); onnxruntime's Arm kernels
        # favour signed activations, so s8/s8 symmetric QDQ.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        sparse_break_even=0.3,
        cpu_match={"implementer": "0x41", "part": ["0xd03"]},
        notes="in-order A53: memory-bound, sparse pays earlier; s8/s8 on Arm",
    ),
    Profile(
        name="rpi4",
        description="Raspberry Pi 4 class: 4x Cortex-A72, 2-8 GB",
        arch="aarch64",
        isa=("neon",),
        cores=4,
        memory_mb=4096,
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        cpu_match={"implementer": "0x41", "part": ["0xd08"]},
        notes="A72 has NEON but no dot-product instructions; s8/s8 on Arm",
    ),
    Profile(
        name="rpi5",
        description="Raspberry Pi 5 class: 4x Cortex-A76 with dot-product, 4-8 GB",
        arch="aarch64",
        isa=("neon", "dotprod"),
        cores=4,
        memory_mb=8192,
        # SDOT (Armv8.2 dot product) makes s8 GEMM several times faster than float.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        cpu_match={"implementer": "0x41", "part": ["0xd0b"]},
        notes="A76 has SDOT/UDOT: int8 pays most here",
    ),
    Profile(
        name="jetson-orin-nano",
        description="NVIDIA Jetson Orin Nano: 6x Cortex-A78AE + Ampere GPU, 8 GB",
        arch="aarch64",
        isa=("neon", "dotprod"),
        cores=6,
        memory_mb=8192,
        # The CUDA provider is used when the onnxruntime build has it; CPU otherwise.
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        cpu_match={"implementer": "0x41", "part": ["0xd42"]},
        notes="CUDA EP when present, CPU fallback; A78AE has SDOT",
    ),
]

PROFILES: dict[str, Profile] = {p.name: p for p in _P}


def names() -> list[str]:
    return list(PROFILES)


def get(name: str) -> Profile:
    """The profile called ``name``; raises DeviceError listing the known names."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise DeviceError(f"unknown device profile {name!r}: expected one of {', '.join(PROFILES)} "
                          "(or 'auto' where a command detects the current machine)")
    return PROFILES[name]
