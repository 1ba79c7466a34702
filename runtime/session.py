"""Build an onnxruntime session for a model file from a device profile.

The profile decides the execution providers (those this onnxruntime build lacks are
dropped, CPU last), the intra-op and inter-op thread counts (``threads`` overrides
intra-op), the graph optimization level, thread spinning and the CPU memory arena.
Any failure to read or load the file becomes a :class:`~zor.common.errors.ModelFileError`
saying what was expected and what was found, never an onnxruntime traceback.

:func:`check_graph` judges a scanned graph (:func:`~zor.runtime.onnxmeta.scan_model`)
before onnxruntime sees it: only the operators the exporter emits
(:data:`zor.common.format.OPERATORS`, ONNX's own domain), no subgraphs, no model-local
functions; a node that computes on constants alone (onnxruntime folds those while it
loads) only where its output is no larger than its input; a constant fed to a
broadcasting operator at most 1-D. So a 10¹⁵-step ``Loop`` or a ``ConstantOfShape`` of
100,000² never reaches onnxruntime.

Example:
    >>> from zor.devices import get
    >>> opts = session_options(get("rpi4"), threads=None)
    >>> opts.intra_op_num_threads
    4
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional, Union

import numpy as np
import onnxruntime as ort
from zor.devices import Profile

from zor.common import format as fmt
from zor.common.errors import ConfigError, ModelFileError

from .onnxmeta import ModelScan

__all__ = ["session_options", "choose_providers", "open_session", "check_file", "check_threads", "max_threads",
           "THREADS_PER_CPU", "check_graph"]

_DOMAINS = ("", "ai.onnx")
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Sum", "Where", "Greater", "Less", "And"})

THREADS_PER_CPU = 4          # threads beyond this many per CPU only cost memory (each has its own stack and arena)

_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def max_threads() -> int:
    """The most intra-op threads a session may ask for here: :data:`THREADS_PER_CPU` × the CPUs this process may use."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return THREADS_PER_CPU * max(1, cpus)


def check_threads(threads: object) -> Optional[int]:
    """``threads`` checked: None, or an int from 1 to :func:`max_threads` (ConfigError saying the bound otherwise).

    A thread count far past the CPUs gains nothing and costs memory: 10⁶ threads took
    gigabytes and hung before the session existed.
    """
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads: expected a positive int or None, got {threads!r}")
    bound = max_threads()
    if threads > bound:
        raise ConfigError(f"threads: expected at most {bound} ({THREADS_PER_CPU} per CPU; this process may use "
                          f"{bound // THREADS_PER_CPU}), got {threads:,}: more threads than that only cost memory")
    return threads


def session_options(profile: Profile, threads: Optional[int]) -> ort.SessionOptions:
    """SessionOptions from ``profile``; ``threads`` (≥ 1) overrides its intra-op count."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads) if threads else int(profile.intra_op_threads)
    opts.inter_op_num_threads = int(profile.inter_op_threads)
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL   # a Zor graph is one chain: nothing to overlap
    opts.graph_optimization_level = _LEVELS[profile.graph_optimization]
    opts.enable_cpu_mem_arena = bool(profile.memory_arena)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if profile.allow_spinning else "0")
    opts.log_severity_level = 3                               # errors only: we report our own
    return opts


def choose_providers(profile: Profile) -> tuple[list[str], list[str]]:
    """(providers to use, providers of the profile this onnxruntime build lacks)."""
    available = set(ort.get_available_providers())
    wanted = list(profile.providers)
    use = [p for p in wanted if p in available]
    missing = [p for p in wanted if p not in available]
    if "CPUExecutionProvider" not in use:
        use.append("CPUExecutionProvider")                    # always the last resort
    return use, missing


def check_file(path: Union[str, os.PathLike]) -> Path:
    """Refuse a missing, empty or plainly non-ONNX file before onnxruntime sees it."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file {path} does not exist: expected an .onnx file written by zor-export")
    if path.is_dir():
        raise ModelFileError(f"model path {path} is a folder: expected an .onnx file")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"model file {path} is empty (0 bytes): expected an ONNX protobuf (truncated copy?)")
    with open(path, "rb") as f:
        head = f.read(1)
    # An ONNX ModelProto starts with field 1 (ir_version, varint: tag 0x08) in every
    # writer we know; other leading tags are legal protobuf, so only a few clear
    # foreign signatures are refused here and onnxruntime judges the rest.
    if head in (b"{", b"[", b"<", b"\x89", b"P", b"\x1f", b"#"):
        raise ModelFileError(f"{path} is not an ONNX model: expected a protobuf ModelProto, got a file starting "
                             f"with {head!r} (JSON, HTML, PNG, zip or text?)")
    return path


def check_graph(scan: ModelScan, where: str) -> None:
    """ModelFileError naming the first part of the scanned graph a Zor export never holds (module docstring)."""
    if scan.foreign or scan.graphs != 1:
        what = scan.foreign[0] if scan.foreign else f"{scan.graphs} graphs"
        raise ModelFileError(f"{where}: the file holds {what}: a Zor export holds one graph and nothing else; "
                             "refused before onnxruntime loads it")
    ranks = {name: len(t.dims) for name, t in scan.initializers.items()}     # constants and their ranks
    for node in scan.nodes:
        label = f"node {node.name or '(unnamed)'!r}: operator {(node.domain or 'ai.onnx')}:{node.op_type}"
        if node.domain not in _DOMAINS or node.op_type not in fmt.OPERATORS:
            raise ModelFileError(f"{where}: {label} is not one a Zor export uses (expected ONNX's own "
                                 f"{', '.join(sorted(fmt.OPERATORS))}): a foreign or edited graph, refused "
                                 "before onnxruntime runs it")
        if node.subgraphs:
            raise ModelFileError(f"{where}: {label} carries a subgraph ({', '.join(node.subgraphs)}): a Zor export "
                                 "has none; refused")
        given = [i for i in node.inputs if i]
        if given and all(i in ranks for i in given):
            if node.op_type not in fmt.CONSTANT_OPERATORS:
                raise ModelFileError(f"{where}: {label} computes on constants alone (onnxruntime would fold it "
                                     f"while loading): a Zor export only does that with "
                                     f"{', '.join(sorted(fmt.CONSTANT_OPERATORS))}; refused")
            rank = ranks[given[0]] if node.op_type != "Reshape" else -1
            ranks.update({o: rank for o in node.outputs if o})
        elif node.op_type in _BROADCASTING:
            wide = [i for i in given if i in ranks and not 0 <= ranks[i] <= 1]
            if wide:
                raise ModelFileError(f"{where}: {label} broadcasts the constant {wide[0]!r} of more than one "
                                     "dimension against the data (it could ask for far more memory than the "
                                     "file holds): a Zor export's constants there are scalars or per-unit "
                                     "vectors; refused")


def open_session(path: Union[str, os.PathLike], profile: Profile, threads: Optional[int],
                 initializers: Optional[Mapping[str, np.ndarray]] = None,
                 data: Optional[bytes] = None) -> tuple[ort.InferenceSession, list[str]]:
    """An InferenceSession for the model at ``path`` configured from ``profile``, and the missing providers.

    ``data``: the file's bytes as the caller checked them: onnxruntime loads these and never reads
    the .onnx file again (external data is looked for next to ``path``). ``initializers`` (name →
    C-contiguous array) replace the file's initializers of those names; onnxruntime uses their
    memory in place and never reads those tensors' external data, so the session keeps them (and
    their OrtValues) alive for as long as it lives.
    """
    path = check_file(path)
    providers, missing = choose_providers(profile)
    opts = session_options(profile, threads)
    if data is not None:
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
    held = []
    for name, array in (initializers or {}).items():
        array = np.ascontiguousarray(array)
        value = ort.OrtValue.ortvalue_from_numpy(array)
        opts.add_initializer(name, value)
        held.append((array, value))
    try:
        sess = ort.InferenceSession(data if data is not None else str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/RuntimeException types
        raise _load_failed(exc, path) from None
    sess._zor_held = (opts, held)   # onnxruntime reads these arrays for the session's whole life
    return sess, missing


def _load_failed(exc: Exception, path: Path) -> ModelFileError:
    """The ModelFileError that says why onnxruntime could not load the file at ``path``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "bad_alloc" in text or "memory" in text.lower() or "allocat" in text.lower():
        return ModelFileError(f"{path}: not enough memory to load it ({path.stat().st_size:,} bytes of graph plus "
                              "any external weights): for a model exported with --external-weights, "
                              f"Model(..., weights='rows') reads only the rows it needs; onnxruntime said: "
                              f"{text[:200]}")
    if "protobuf" in text.lower() or "parsing failed" in text.lower():
        what = "not an ONNX model, or a truncated one"
    elif "external" in text.lower() or "data file" in text.lower() or "location" in text.lower():
        what = "its external weight data is missing or short"
    else:
        what = "an ONNX model onnxruntime cannot load"
    return ModelFileError(f"{path}: {what}: expected a complete ONNX file written by zor-export "
                          f"({path.stat().st_size} bytes); onnxruntime said: {text[:300]}")
