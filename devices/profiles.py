"""Device profiles: declarative data about the machines models run on.

A profile names a class of device and what suits it: the CPU architecture and ISA
features, cores and memory, onnxruntime execution providers and thread settings, the
int8 recipe that suits the core, whether int8 pays there (and how we know), and the
spike rate below which the event-driven (sparse) path pays, for a wide layer, by layer size, or by layer
shape (:class:`SparseShape`: r* = r_be·(1 − S₀/N − k/n_out)/(1 + φ/n_out) for an n_in × n_out connection of
N synapses, a cost model measured on the device). The exporter picks its
quantization recipe from a profile (``get(name).int8``); the runtime configures
onnxruntime from one (threads, providers, graph optimization, spinning, arena).
Torch-free, numpy-free: plain data.

Every choice carries its reason in a comment next to it. The sources are the
onnxruntime quantization guide ("Data type selection", "When to use reduce-range and
per-channel quantization?", "Why am I not seeing performance improvements?") and
its threading guide; the ISA facts are the vendors' published core specifications.

Example:
    >>> from zor.devices import get
    >>> get("rpi4").int8.activation_type
    's8'
    >>> get("x86-64-avx2").int8.reduce_range
    True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

from zor.common.errors import DeviceError

__all__ = ["Int8Recipe", "SparseShape", "Profile", "PROFILES", "GRAPH_OPTIMIZATIONS", "get", "names"]

GRAPH_OPTIMIZATIONS = ("disable", "basic", "extended", "all")


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantize to int8 for a core (onnxruntime static quantization terms).

    ``format``: "QDQ" (QuantizeLinear/DequantizeLinear pairs around float ops, which
    onnxruntime fuses into integer kernels) or "QOperator" (QLinearMatMul & co.).
    ``activation_type`` / ``weight_type``: "u8" (QUInt8) or "s8" (QInt8).
    ``per_channel``: one scale per output column of each weight matrix.
    ``reduce_range``: 7-bit weights, for u8×s8 kernels that sum pairs in int16.
    """

    format: str = "QDQ"
    activation_type: str = "u8"
    weight_type: str = "s8"
    per_channel: bool = True
    reduce_range: bool = False

    def __post_init__(self) -> None:
        if self.format not in ("QDQ", "QOperator"):
            raise DeviceError(f"Int8Recipe.format: expected 'QDQ' or 'QOperator', got {self.format!r}")
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("u8", "s8"):
                raise DeviceError(f"Int8Recipe.{name}: expected 'u8' or 's8', got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SparseShape:
    """Where the event-driven form pays for one n_in × n_out float32 connection (N = n_in·n_out synapses), from
    a cost model measured on the device at batch 1 (r = share of the n_in inputs active):

        dense = a_d + b_d·N,   sparse = a_s + c·n_in + r·(f·n_in + e·N)
        dense = sparse at  r*(n_in, n_out) = r_be · (1 − S₀/N − k/n_out) / (1 + φ/n_out)   (clipped to [0, 1])

    with r_be = b_d/e, S₀ = (a_s − a_d)/b_d, k = c/b_d, φ = f/e: the sparse form's fixed nodes and its scan of
    every input cost S₀ + k·n_in dense synapses, each active row φ gathered ones; a narrow output (small n_out)
    makes both large against the row it reads, so the rate depends on the shape, not on N alone.
    """

    break_even: float              # r_be = b_d/e: the rate for a wide connection whose weights stay in cache
    min_synapses: float            # S₀ = (a_s − a_d)/b_d: the sparse form's extra fixed cost, in dense synapses
    row_synapses: float            # k = c/b_d: per input unit, active or not (mask, scan), in dense synapses
    active_row_synapses: float     # φ = f/e: per active input row (the gather's per-row cost), in gathered synapses
    max_synapses: int              # the largest N the model was measured on; above it the N-keyed curve holds

    def __post_init__(self) -> None:
        for key in ("break_even", "min_synapses", "row_synapses", "active_row_synapses"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (key == "break_even" and value > 1):
                want = "a rate in [0, 1]" if key == "break_even" else "a finite number ≥ 0"
                raise DeviceError(f"SparseShape.{key}: expected {want}, got {value!r}")
        if isinstance(self.max_synapses, bool) or not isinstance(self.max_synapses, int) or self.max_synapses < 1:
            raise DeviceError(f"SparseShape.max_synapses: expected an int ≥ 1, got {self.max_synapses!r}")

    def rate(self, n_in: int, n_out: int) -> float:
        """r*(n_in, n_out) of the class docstring, clipped to [0, 1]."""
        n = float(n_in) * float(n_out)
        r = self.break_even * (1.0 - self.min_synapses / n - self.row_synapses / n_out) \
            / (1.0 + self.active_row_synapses / n_out)
        return min(1.0, max(0.0, r))


@dataclass(frozen=True)
class Profile:
    """One class of device. See the module docstring; fields are documented inline."""

    name: str                               # profile id used on the command line
    description: str                        # one line for people
    arch: str                               # "x86_64", "aarch64" or "any"
    isa: tuple = ()                         # ISA features assumed ("avx2", "avx512_vnni", "neon", "dotprod", "i8mm")
    cores: int = 4                          # physical cores
    memory_mb: int = 4096                   # RAM
    providers: tuple = ("CPUExecutionProvider",)  # onnxruntime execution providers, in order of preference
    intra_op_threads: int = 0               # onnxruntime intra-op threads (0 = one per physical core)
    inter_op_threads: int = 1               # onnxruntime inter-op threads (sequential execution: a chain graph)
    graph_optimization: str = "all"         # onnxruntime graph optimization level: disable/basic/extended/all
    allow_spinning: bool = True             # idle intra-op threads busy-wait for the next op (faster, burns CPU)
    memory_arena: bool = True               # onnxruntime's CPU memory arena (reuses buffers; never shrinks)
    huge_pages: bool = True                 # sparse connections' weight rows in transparent huge pages (Linux):
                                            #   fewer TLB misses per row gather (zor.runtime.hugepages)
    int8: Int8Recipe = field(default_factory=Int8Recipe)  # the int8 recipe that suits this core
    int8_pays: Optional[bool] = None        # verdict: is int8 faster than float32 here (None = unknown)
    int8_evidence: str = ""                 # how the verdict is known: measured (where, figures) or expected (why)
    sparse_break_even: float = 0.25         # spike rate below which the sparse (event-driven) path pays (wide layers)
    sparse_min_synapses: int = 65536        # S0: a connection of N = n_j*n_{j+1} synapses pays below r_be*(1 - S0/N)
    sparse_curve: tuple = ()                # measured ((N synapses, break-even rate), ...): interpolated in log N
                                            #   (below the first point down to 0 at S0), replacing the formula above
    sparse_shape: Optional[SparseShape] = None  # measured cost model by shape (n_in, n_out), float32, N ≤ its
                                            #   max_synapses: replaces curve and formula where the shape is known
    sparse_evidence: str = ""               # how the break-even is known: measured (where, figures) or estimated (why)
    sparse_int8_curve: tuple = ()           # measured ((N synapses, break-even rate), ...) of int8 sparse rows against
                                            #   the int8 dense graph (int8 exports); () = use sparse_curve
    sparse_group_bytes: int = 2 << 20       # gathered bytes per row group of a sparse connection (zor.export.paths
                                            #   .choose_groups): small enough that a group's copy is still in cache
                                            #   when its MatMul reads it
    sparse_single_group_bytes: int = 4 << 20  # a gathered block up to this size stays in one group
    sparse_max_groups: int = 16             # at most this many row groups per connection
    cpu_match: dict = field(default_factory=dict)  # how detection recognises it (see zor.devices.detection)
    notes: str = ""                         # the reasons behind the choices, in one line

    def __post_init__(self) -> None:
        if self.graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise DeviceError(f"profile {self.name!r}: graph_optimization expected one of "
                              f"{', '.join(GRAPH_OPTIMIZATIONS)}, got {self.graph_optimization!r}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise DeviceError(f"profile {self.name!r}: thread counts must be ≥ 0, got "
                              f"{self.intra_op_threads}/{self.inter_op_threads}")
        if not 0.0 <= self.sparse_break_even <= 1.0:
            raise DeviceError(f"profile {self.name!r}: sparse_break_even expected a rate in [0, 1], "
                              f"got {self.sparse_break_even}")
        if isinstance(self.sparse_min_synapses, bool) or not isinstance(self.sparse_min_synapses, int) \
                or self.sparse_min_synapses < 0:
            raise DeviceError(f"profile {self.name!r}: sparse_min_synapses expected an int ≥ 0, "
                              f"got {self.sparse_min_synapses!r}")
        for key in ("sparse_group_bytes", "sparse_single_group_bytes", "sparse_max_groups"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DeviceError(f"profile {self.name!r}: {key} expected an int ≥ 1, got {value!r}")
        if self.sparse_shape is not None and not isinstance(self.sparse_shape, SparseShape):
            raise DeviceError(f"profile {self.name!r}: sparse_shape expected a SparseShape or None, "
                              f"got {self.sparse_shape!r}")
        for key in ("sparse_curve", "sparse_int8_curve"):
            try:
                curve = [(int(n), float(r)) for n, r in getattr(self, key)]
            except (TypeError, ValueError):
                raise DeviceError(f"profile {self.name!r}: {key} expected ((synapses, rate), ...), "
                                  f"got {getattr(self, key)!r}") from None
            if any(n <= 0 or not 0.0 <= r <= 1.0 for n, r in curve) or [n for n, _ in curve] != sorted({n for n, _ in curve}):
                raise DeviceError(f"profile {self.name!r}: {key} expected increasing synapse counts > 0 with "
                                  f"rates in [0, 1], got {getattr(self, key)!r}")

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
        # No spinning: on an unknown (possibly shared or battery) machine, idle threads
        # should sleep rather than burn a core waiting for the next op.
        allow_spinning=False,
        # U8S8 QDQ runs on every onnxruntime CPU build. reduce_range because the core
        # may be an x86 without VNNI, where the u8×s8 kernel (VPMADDUBSW) sums pairs in
        # saturating int16; 7-bit weights cannot overflow it (ORT quantization guide).
        # On ARM or VNNI cores it only costs one bit of weight precision.
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=True),
        int8_pays=None,
        int8_evidence="unknown core: ORT's guide warns int8 is often slower on hardware without VNNI "
                      "or dot-product instructions; measure with zor-bench",
        sparse_evidence="estimate: the default 0.25, within the 0.18 to 0.61 measured on x86-64-avx2, so that an "
                        "unknown core picks sparse only where it clearly pays; measure with "
                        "benchmarks/sparse_inference.py",
        notes="safe everywhere; slower than a matched profile",
    ),
    Profile(
        name="x86-64-avx2",
        description="x86-64 with AVX2 and FMA, no VNNI (Haswell..Skylake, Zen 1-3, EPYC Rome/Milan)",
        arch="x86_64",
        isa=("sse4_2", "avx", "avx2", "fma"),
        cores=4,
        memory_mb=8192,
        # u8 activations / s8 weights: onnxruntime's x86 integer GEMMs are U8S8 (s8
        # activations in QDQ are rewritten to u8 on x86), and S8S8 in QOperator form is
        # slow on x86-64 (ORT guide). Without VNNI the U8S8 kernel uses VPMADDUBSW, whose
        # pairwise int16 sums saturate; reduce_range (7-bit weights) is the documented
        # fix, and per-channel on AVX2 "generally needs reduce-range as well".
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=True),
        # Measured by benchmarks/runtime_bench.py on an AVX2 EPYC (no VNNI), few-shot
        # 784-128-784 model, 1 thread: int8 pays, modestly (see int8_evidence).
        int8_pays=True,
        int8_evidence="measured (benchmarks/runtime_bench.py, AMD EPYC with AVX2, no VNNI, few-shot 784-128-784, "
                      "1 thread, zor.export int8 QDQ u8/s8 reduce_range): about 1.3x float32 speed at batch 64 "
                      "and 1.1x at batch 1; a modest gain, well short of what VNNI gives",
        # Measured by benchmarks/sparse_inference.py on an AVX2 EPYC (no VNNI), 1 thread, batch 1, float32,
        # sparse form with row groups: the rate where sparse and dense cost the same grows with the layer,
        # because a matrix that fits the cache makes dense cheap while a 64 MB one makes it wait on memory:
        # mean of two runs: 0.19 at 256x256, 0.26 at 512, 0.29 at 1024, 0.36 at 2048, 0.62 at 4096 (taken
        # as 0.6); 128x128 never paid.
        sparse_break_even=0.6,
        sparse_min_synapses=16384,
        sparse_curve=((65536, 0.19), (262144, 0.26), (1048576, 0.29), (4194304, 0.36), (16777216, 0.6)),
        sparse_evidence="measured (benchmarks/sparse_inference.py, AMD EPYC with AVX2, onnxruntime 1.32, 1 thread, "
                        "batch 1, float32, mean of two runs): dense and sparse cost the same at 0.19 / 0.26 / 0.29 / "
                        "0.36 / 0.62 of the units active for 256 / 512 / 1024 / 2048 / 4096-wide square layers; "
                        "never at 128",
        cpu_match={"flags_all": ["avx2"], "flags_none": ["avx512_vnni", "avx_vnni"]},
        notes="U8S8 QDQ; reduce_range because of VPMADDUBSW int16 saturation without VNNI",
    ),
    Profile(
        name="x86-64-avx512-vnni",
        description="x86-64 with VNNI (Cascade Lake, Ice Lake, Sapphire Rapids, Zen 4; AVX-VNNI: Alder Lake)",
        arch="x86_64",
        isa=("avx2", "avx512f", "avx512bw", "avx512_vnni"),
        cores=8,
        memory_mb=16384,
        # VNNI's VPDPBUSD multiplies u8×s8 and accumulates straight into int32: no int16
        # saturation, so full 8-bit weights ("reduce-range is not needed on machines
        # supporting VNNI", ORT guide). Still U8S8: that is the x86 kernel's native form.
        int8=Int8Recipe(format="QDQ", activation_type="u8", weight_type="s8", per_channel=True, reduce_range=False),
        int8_pays=True,
        int8_evidence="measured (benchmarks/runtime_bench.py, few-shot 784-128-784, 1 thread, Model.run): 2-core "
                      "Intel Xeon with AVX-512 VNNI and AMX-int8, integer gate: 1.98-2.08x float32 at batch 64, "
                      "1.02-1.11x at batch 1; earlier, 2-core AMD EPYC with AVX-512 VNNI, QDQ u8/s8: 1.79x at "
                      "batch 64, 0.97x at batch 1 (docs/notes/int8-vnni.md)",
        # Break-even measured by benchmarks/sparse_inference.py (width_break_even, layer_sweep) on a 2-core Intel
        # Xeon with AVX-512 VNNI and AMX (2 MiB L2 per core), 1 thread, batch 1, with this profile's row groups
        # (below), mean of four runs on a shared machine (docs/notes/sparse-avx512.md): float32 0.08 at 256x256,
        # 0.22 at 512, 0.44 at 1024, 0.43 at 2048, 0.42 at 4096. Before the row groups were the profile's, a
        # 2-core AMD EPYC with AVX-512 VNNI measured 0.17 / 0.20 / 0.39 / 0.38 / 0.32 (mean of two runs, with
        # 2 MiB groups): the EPYC's curve described a graph this profile no longer emits.
        sparse_break_even=0.42,
        sparse_min_synapses=16384,   # 128x128 never paid here either (benchmarks/sparse_shapes.py)
        sparse_curve=((65536, 0.08), (262144, 0.22), (1048576, 0.44), (4194304, 0.43), (16777216, 0.42)),
        # int8 rows (integer product) against the int8 dense (QDQ) graph, same machine, mean of three runs:
        # never at 256 and 512 (a 256 KiB int8 matrix is read from cache), 0.035 at 1024, 0.22 at 2048, 0.17
        # at 4096: int8 makes the dense product 4x cheaper and the gather only 2x
        sparse_int8_curve=((262144, 0.0), (1048576, 0.035), (4194304, 0.22), (16777216, 0.17)),
        # By shape, float32, batch-1 form (benchmarks/sparse_shapes.py, same Xeon, six runs of 15 rounds x 200
        # calls, load average 1.5-2.6): the crossover fitted over 784x128, 784x256, 128x10, 128x128, 256x256,
        # 512x512, 1024x256, 256x1024, 784x10 (medians 0.025, 0.115, never, never, 0.023, 0.196, 0.163, 0.223,
        # never; fit rms 0.008, largest error 0.019). NIR imports (MatMul + Add) cross at or above it at every
        # shape (784x128: 0.056), so it is conservative there. Above 262,144 synapses the curve holds.
        sparse_shape=SparseShape(break_even=0.313, min_synapses=46226, row_synapses=52.3, active_row_synapses=82,
                                 max_synapses=262144),
        sparse_evidence="measured (benchmarks/sparse_inference.py, 2-core Intel Xeon with AVX-512 VNNI and AMX, "
                        "onnxruntime 1.32, 1 thread, batch 1, mean of four runs on a shared machine): float32 "
                        "dense and sparse cost the same at 0.08 / 0.22 / 0.44 / 0.43 / 0.42 of the units active "
                        "for 256 / 512 / 1024 / 2048 / 4096-wide square layers; int8 rows against int8 dense: "
                        "never / never / 0.035 / 0.22 / 0.17 (mean of three runs); earlier, with 2 MiB row "
                        "groups, an AMD EPYC with AVX-512 VNNI: float32 0.17 / 0.20 / 0.39 / 0.38 / 0.32 (no longer "
                        "used); by shape (benchmarks/sparse_shapes.py, same Xeon, float32, batch 1, median of six "
                        "runs): 0.025 at 784x128, 0.115 at 784x256, 0.023 at 256x256, 0.163 at 1024x256, 0.223 "
                        "at 256x1024, 0.196 at 512x512, never at 128x10, 128x128 and 784x10: sparse_shape, fitted "
                        "to them (rms 0.008)",
        # Row groups measured by bare sessions on the same Intel Xeon, one 4096-wide float32 layer, 1 thread:
        # fastest with 0.6-1 MB gathered per group at 5, 10, 20 and 30 % (4, 8, 16-24, 24 groups; 10 %: 0.65 ms
        # in 8 groups, 0.76 in 4, 0.87 in 1); through Model.run in the same rounds as 2 MiB groups: 5 % 0.443
        # vs 0.513 ms, 10 % 0.869 vs 0.946 ms; not measured on an AMD AVX-512 core
        sparse_group_bytes=1 << 20,
        sparse_single_group_bytes=1 << 20,
        sparse_max_groups=32,
        cpu_match={"flags_any": ["avx512_vnni", "avx_vnni"]},
        notes="U8S8 QDQ, full range: VNNI accumulates in int32",
    ),
    Profile(
        name="rpi3",
        description="Raspberry Pi 3 class: 4x Cortex-A53 (in-order, no dot product), 1 GB",
        arch="aarch64",
        isa=("neon",),
        cores=4,
        memory_mb=1024,
        intra_op_threads=4,       # all four cores: no SMT, and nothing else heavy runs on a Pi app box
        # Pis throttle when hot; spinning threads keep all four cores busy between calls.
        allow_spinning=False,
        # 1 GB shared with the GPU: the arena keeps its peak allocation and never gives
        # it back; for small models plain malloc/free costs little.
        memory_arena=False,
        # Arm: S8S8 QDQ is onnxruntime's default and first choice, and "there is no such
        # [saturation] issue on other CPU architectures (x64 with VNNI and ARM)", so full
        # range. On Arm, MLAS's signed kernels are its preferred path.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        int8_pays=None,
        int8_evidence="unknown: A53 lacks SDOT; ORT's guide warns cores without dot-product instructions "
                      "often see no gain; int8 still quarters weight memory traffic on a "
                      "bandwidth-starved board; measure on the device",
        sparse_break_even=0.3,    # estimate: in-order, memory-bound core; skipping rows pays earlier
        sparse_evidence="estimate: in-order, memory-bound A53 with a small cache; skipping rows pays earlier than on x86 (0.18 to 0.61 measured there, growing with the layer)",
        cpu_match={"implementer": "0x41", "part": ["0xd03"], "board": ["Raspberry Pi 3"]},
        notes="in-order A53: memory-bound, sparse pays earlier; s8/s8 on Arm; no arena in 1 GB",
    ),
    Profile(
        name="rpi4",
        description="Raspberry Pi 4 class: 4x Cortex-A72 (NEON, no dot product), 2-8 GB",
        arch="aarch64",
        isa=("neon",),
        cores=4,
        memory_mb=4096,
        intra_op_threads=4,       # four cores, no SMT
        allow_spinning=False,     # thermal throttling: let idle threads sleep
        # s8/s8 full range on Arm (see rpi3); the A72 is Armv8.0: no SDOT/UDOT.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        int8_pays=None,
        int8_evidence="unknown: A72 has no dot-product instructions (Armv8.0); gains, if any, come from "
                      "8-bit NEON multiply-accumulate and less memory traffic; measure on the device",
        sparse_break_even=0.25,   # estimate
        sparse_evidence="estimate: A72 with NEON, between the A53 and x86; not measured on a Pi 4",
        cpu_match={"implementer": "0x41", "part": ["0xd08"], "board": ["Raspberry Pi 4", "Raspberry Pi Compute Module 4"]},
        notes="A72 has NEON but no dot-product instructions; s8/s8 on Arm",
    ),
    Profile(
        name="rpi5",
        description="Raspberry Pi 5 class: 4x Cortex-A76 with dot product, 4-8 GB",
        arch="aarch64",
        isa=("neon", "dotprod"),
        cores=4,
        memory_mb=8192,
        intra_op_threads=4,       # four cores, no SMT
        allow_spinning=False,     # thermal throttling without active cooling
        # Armv8.2 SDOT: 4 s8×s8 products summed into an int32 lane per instruction; ORT's
        # guide names "ARM with dot-product instructions" among the int8 winners.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        int8_pays=True,
        int8_evidence="expected, not measured here: A76 has SDOT/UDOT, which ORT's guide names among the "
                      "hardware that gains from int8; no Pi 5 was available to time",
        sparse_break_even=0.2,    # estimate: SDOT makes dense int8 cheap
        sparse_evidence="estimate: A76 with a larger cache and fast dense kernels; not measured on a Pi 5",
        cpu_match={"implementer": "0x41", "part": ["0xd0b"], "board": ["Raspberry Pi 5", "Raspberry Pi Compute Module 5"]},
        notes="A76 has SDOT/UDOT: int8 expected to pay here",
    ),
    Profile(
        name="jetson-orin-nano",
        description="NVIDIA Jetson Orin Nano: 6x Cortex-A78AE + Ampere GPU, 8 GB shared",
        arch="aarch64",
        isa=("neon", "dotprod"),
        cores=6,
        memory_mb=8192,
        # CUDA when the onnxruntime build has it (the Jetson builds do; PyPI's aarch64
        # wheel is CPU-only), CPU otherwise: the runtime drops providers it lacks.
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
        intra_op_threads=6,       # six cores, no SMT
        # ORT's guide: GPU int8 needs S8S8 (and Tensor Cores); on the A78AE CPU, S8S8
        # uses SDOT. One recipe suits both paths.
        int8=Int8Recipe(format="QDQ", activation_type="s8", weight_type="s8", per_channel=True, reduce_range=False),
        int8_pays=True,
        int8_evidence="expected on the CPU path (A78AE has SDOT), not measured here; ORT's guide does GPU "
                      "int8 through the TensorRT EP, so with the CUDA EP keep float32",
        sparse_break_even=0.2,    # estimate, CPU path
        sparse_evidence="estimate, CPU path (A78AE); not measured on a Jetson",
        cpu_match={"implementer": "0x41", "part": ["0xd42"], "board": ["Jetson", "Orin"]},
        notes="CUDA EP when present, CPU fallback; A78AE has SDOT",
    ),
]

PROFILES: dict[str, Profile] = {p.name: p for p in _P}


def names() -> list[str]:
    """Known profile names, ``generic`` first."""
    return list(PROFILES)


def get(name: Union[str, Profile]) -> Profile:
    """The profile called ``name`` (a Profile is returned as is).

    Raises :class:`~zor.common.errors.DeviceError` naming the known profiles.
    """
    if isinstance(name, Profile):
        return name
    if not isinstance(name, str) or name not in PROFILES:
        raise DeviceError(f"unknown device profile {name!r}: expected one of {', '.join(PROFILES)} "
                          "(or 'auto' where a command detects the current machine)")
    return PROFILES[name]
