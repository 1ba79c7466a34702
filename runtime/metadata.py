"""The parsed ``zor.*`` metadata of an exported file (see :mod:`zor.common.format`).

:func:`parse` turns onnxruntime's ``custom_metadata_map`` (every value a string)
into a :class:`Metadata`, and refuses a file that is not a Zor export, or one of a
newer format version, with a :class:`~zor.common.errors.ModelFileError` that says what was
expected and what was found.

Example:
    >>> m = parse({"zor.format": "zor-onnx", "zor.format_version": "1",
    ...            "zor.layers": '[{"size": 4}, {"size": 2}]'}, "m.onnx")
    >>> m.sizes, m.stateful, m.task["name"], m.quantization["mode"]
    ([4, 2], False, 'generic', 'none')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from zor.common import format as fmt
from zor.common.errors import ModelFileError

__all__ = ["Metadata", "StateSpec", "parse"]


@dataclass(frozen=True)
class StateSpec:
    """One state tensor pair of a stateful layer: ``state_in_{layer}`` → ``state_out_{layer}``."""

    layer: int
    size: int
    input: str
    output: str
    initial: Any = 0.0          # a number, or a list of ``size`` numbers: what a fresh stream starts from


@dataclass(frozen=True)
class Metadata:
    """What the exporter wrote into ``metadata_props``, parsed."""

    format_version: int
    engine_version: str
    layers: list                 # per layer: dict with size, activation, stateful, decay, ...
    task: dict                   # name, input {...}, output {...}, labels
    stateful: bool
    state: list                  # StateSpec per stateful layer
    quantization: dict           # {"mode": "none" | "int8" | "fp16", ...}
    calibration: dict
    verification: dict
    weights_sha256: str
    raw: dict = field(default_factory=dict)   # every metadata entry as written (strings)
    paths: dict = field(default_factory=dict)     # zor.paths: per-connection dense/sparse, form, max_batch
    weights: dict = field(default_factory=dict)   # zor.weights: the external weight file ({}: inline)

    @property
    def max_batch(self) -> Optional[int]:
        """Largest batch the graph accepts (a sparse export's limit), None for any."""
        mb = self.paths.get("max_batch")
        return int(mb) if mb is not None else None

    @property
    def path(self) -> str:
        """The requested path at export: "dense", "sparse" or "auto" ("dense" for files without zor.paths)."""
        return str(self.paths.get("requested", "dense"))

    @property
    def sparse_connections(self) -> list[int]:
        """Indices of the connections computed in sparse (event-driven) form."""
        return [int(c["connection"]) for c in self.paths.get("connections", []) if c.get("path") == "sparse"]

    @property
    def sizes(self) -> list[int]:
        return [int(layer["size"]) for layer in self.layers]

    @property
    def precision(self) -> str:
        """"float32", "int8" or "fp16", from ``zor.quantization``."""
        mode = str(self.quantization.get("mode", "none"))
        return "float32" if mode in ("none", "float32", "") else mode

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "engine_version": self.engine_version,
            "layers": self.layers, "task": self.task, "stateful": self.stateful,
            "state": [s.__dict__ for s in self.state], "quantization": self.quantization,
            "calibration": self.calibration, "verification": self.verification,
            "weights_sha256": self.weights_sha256, "paths": self.paths, "weights": self.weights,
        }


def _json(meta: Mapping[str, str], key: str, default: Any, want: type, where: str) -> Any:
    """Metadata entry ``key`` parsed as JSON of type ``want`` (``default`` when absent); else ModelFileError."""
    if key not in meta or meta[key] == "":
        return default
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{where}: metadata {key} is not valid JSON ({exc.msg} at char {exc.pos}): "
                             f"expected a JSON {want.__name__}, got {meta[key][:60]!r}") from None
    except RecursionError:              # e.g. 100,000 nested brackets: json recurses once per level
        raise ModelFileError(f"{where}: metadata {key} is JSON nested too deeply to read: expected a JSON "
                             f"{want.__name__} a few levels deep, got {meta[key][:20]!r}...") from None
    if not isinstance(value, want):
        raise ModelFileError(f"{where}: metadata {key}: expected a JSON {want.__name__}, got {type(value).__name__}")
    return value


def parse(meta: Mapping[str, str], where: str = "model") -> Metadata:
    """Parse and validate the ``zor.*`` entries of ``meta`` (``where`` names the file in errors)."""
    version = _format_version(meta, where)
    layers = _json(meta, fmt.KEYS.LAYERS, None, list, where)
    if not layers or not all(isinstance(d, dict) and isinstance(d.get("size"), int) and d["size"] > 0 for d in layers):
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.LAYERS}: expected a list of layers with positive "
                             f"integer sizes, got {meta.get(fmt.KEYS.LAYERS, '')[:80]!r}")
    task = _json(meta, fmt.KEYS.TASK, {"name": "generic"}, dict, where)
    task.setdefault("name", "generic")
    stateful, state = _state(meta, layers, where)
    quant = _json(meta, fmt.KEYS.QUANTIZATION, {"mode": "none"}, dict, where)
    quant.setdefault("mode", "none")
    paths, weights = _paths(meta, where), _weights(meta, where)
    return Metadata(
        format_version=version,
        engine_version=meta.get(fmt.KEYS.ENGINE_VERSION, ""),
        layers=layers,
        task=task,
        stateful=stateful,
        state=state,
        quantization=quant,
        calibration=_json(meta, fmt.KEYS.CALIBRATION, {}, dict, where),
        verification=_json(meta, fmt.KEYS.VERIFICATION, {}, dict, where),
        weights_sha256=meta.get(fmt.KEYS.WEIGHTS_SHA256, ""),
        raw=dict(meta),
        paths=paths,
        weights=weights,
    )


def _format_version(meta: Mapping[str, str], where: str) -> int:
    """The Zor format version; a file that is not a Zor export, or of a newer format, is a ModelFileError."""
    found = meta.get(fmt.KEYS.FORMAT)
    if found != fmt.FORMAT:
        zor_keys = sorted(k for k in meta if k.startswith("zor."))
        raise ModelFileError(
            f"{where} is ONNX but not a Zor export: expected metadata {fmt.KEYS.FORMAT} = {fmt.FORMAT!r}, "
            f"got {found!r}" + (f" (zor.* keys present: {', '.join(zor_keys)})" if zor_keys else
                               " (no zor.* metadata at all; export it with zor-export)"))
    try:
        version = int(meta.get(fmt.KEYS.FORMAT_VERSION, ""))
    except ValueError:
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.FORMAT_VERSION}: expected an integer, "
                             f"got {meta.get(fmt.KEYS.FORMAT_VERSION)!r}") from None
    if version > fmt.FORMAT_VERSION or version < 1:
        raise ModelFileError(f"{where}: Zor format version {version} is not readable here: expected 1..{fmt.FORMAT_VERSION} "
                             "(a newer exporter wrote it; upgrade zor-edge)")
    return version


def _state(meta: Mapping[str, str], layers: list, where: str) -> tuple[bool, list[StateSpec]]:
    """(stateful, the state tensors) from ``zor.stateful`` and ``zor.state``."""
    stateful_text = meta.get(fmt.KEYS.STATEFUL, "false").strip().lower()
    if stateful_text not in ("true", "false"):
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.STATEFUL}: expected 'true' or 'false', got {stateful_text!r}")
    state = []
    for entry in _json(meta, fmt.KEYS.STATE, [], list, where):
        try:
            i = int(entry["layer"])
            size = int(entry.get("size", layers[i]["size"]))
            state.append(StateSpec(layer=i, size=size, input=str(entry.get("input", fmt.state_in(i))),
                                   output=str(entry.get("output", fmt.state_out(i))),
                                   initial=entry.get("initial", 0.0)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ModelFileError(f"{where}: metadata {fmt.KEYS.STATE}: expected entries "
                                 f"{{layer, size, input, output, initial}}, got {entry!r} ({exc})") from None
    stateful = stateful_text == "true"
    if stateful and not state:
        raise ModelFileError(f"{where}: metadata says {fmt.KEYS.STATEFUL} = true but {fmt.KEYS.STATE} lists no "
                             "state tensors: expected one entry per stateful layer")
    return stateful, state


def _paths(meta: Mapping[str, str], where: str) -> dict:
    """``zor.paths``: the batch limit and the path of each connection, checked."""
    paths = _json(meta, fmt.KEYS.PATHS, {}, dict, where)
    mb = paths.get("max_batch")
    if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or mb < 1):
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.PATHS} max_batch: expected an integer ≥ 1 or null, got {mb!r}")
    conns = paths.get("connections", [])
    if not isinstance(conns, list) or not all(isinstance(c, dict) and isinstance(c.get("connection"), int)
                                              and c.get("path") in ("dense", "sparse") for c in conns):
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.PATHS} connections: expected a list of "
                             "{connection: int, path: 'dense' | 'sparse', ...}, got " + repr(conns)[:80])
    return paths


def _weights(meta: Mapping[str, str], where: str) -> dict:
    """``zor.weights``: the external weights file's name, size and tensors ({} when the weights are inline)."""
    weights = _json(meta, fmt.KEYS.WEIGHTS, {}, dict, where)
    if weights and not (isinstance(weights.get("location"), str) and isinstance(weights.get("bytes"), int)
                        and not isinstance(weights.get("bytes"), bool) and weights["bytes"] >= 0
                        and isinstance(weights.get("tensors"), list)):
        raise ModelFileError(f"{where}: metadata {fmt.KEYS.WEIGHTS}: expected {{location: file name, bytes: int, "
                             f"tensors: [...]}}, got {meta.get(fmt.KEYS.WEIGHTS, '')[:80]!r}")
    return weights
