"""``Model``: load a Zor export and run it on onnxruntime, torch-free.

The file is a per-step graph (see :mod:`zor.common.format`): for layer i with charge c_i,

    s_i = [c_i > θ_i]          (``spikes_{i}``, bool)
    a_i = f_i(c_i ⊙ s_i)       next layer's input is a_i W_i
    output = f_L(c_L)          (``output``)

with c_i = λ_i·state_in_i + h_i for stateful layers (and ``state_out_i`` the reset
charge). :meth:`Model.run` is one pure call: stateful layers start from the initial
state the metadata gives (or from state arrays passed by name) and the new state
comes back as ``state_out_{i}``; :meth:`Model.stream` gives a :class:`Stream` that
carries the state between calls for you.

Thread safety: ``Model.run`` may be called from many threads at once on one Model
(onnxruntime's ``InferenceSession.run`` is thread-safe and the Model keeps no
per-call state). A :class:`Stream` serialises its own steps with a lock; give each
thread (each user, each sensor) its own stream.

Example:
    >>> from zor.runtime import Model                          # doctest: +SKIP
    >>> m = Model("fewshot.onnx", device="auto", threads=2)   # doctest: +SKIP
    >>> m.run(x)["output"].shape                               # doctest: +SKIP
    (16, 784)
    >>> out = m.run(x, spikes=True); out["spike_rates"]        # doctest: +SKIP
    array([0.41, 0.12, 1.  ])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
from zor.devices import Detection, Profile, detect, get

from zor.common import format as fmt
from zor.common.deprecation import renamed_parameters
from zor.common.errors import (
    ConfigError,
    ModelFileError,
    ShapeError,
    StateError,
)

from .checks import all_finite, check_array, check_outputs, run_failure
from .loaders import TensorInfo, load
from .metadata import StateSpec
from .session import check_threads
from .stream import Stream
from .weightfile import BACKENDS

__all__ = ["Model", "TensorInfo", "resolve_device"]


def resolve_device(device: Union[str, Profile, None]) -> tuple[Profile, Optional[Detection]]:
    """The profile for ``device``: "auto" detects this machine; a name or Profile is looked up."""
    if device is None or device == "auto":
        d = detect()
        return d.profile, d
    return get(device), None


@renamed_parameters({"verify_weights": "check_weights"})
class Model:
    """A Zor ONNX export loaded for inference (see the module docstring).

    ``Model(path, device="auto", threads=None)``: ``device`` is a profile name from
    :mod:`zor.devices`, a Profile, or "auto" (detect this machine); ``threads``
    overrides the profile's intra-op thread count.

    Every load checks the file before onnxruntime sees it (:mod:`zor.runtime.loaders`): a
    graph our exporter does not write is refused with the operator named, and the tensors
    are checked against the SHA-256 recorded at export (``zor.integrity``; external weights
    against ``zor.weights``, and the graph's external-data entries against the metadata), so
    a changed file never gives answers. ``check_weights=False`` is the explicit opt-out of
    the hashing (a load then costs what onnxruntime alone costs; the graph checks stay);
    ``verify_weights`` is its deprecated old name.

    Files with external weights (``zor-export --external-weights``): ``weights``
    chooses how they are used: ``"load"`` (read, checked and handed to onnxruntime),
    ``"rows"`` (nothing is loaded:
    each call reads only the rows of the units that spiked, :mod:`zor.runtime.rows`;
    ``weights_backend`` "pread" or "mmap"), or ``"auto"`` (rows when twice the weights
    do not fit the memory left to this process). Every call first checks that the
    weights file has not changed since it was opened. The three load paths (weights
    inline, loaded, read as rows) are :mod:`zor.runtime.loaders`.
    """

    def __init__(self, path: Union[str, os.PathLike], device: Union[str, Profile, None] = "auto",
                 threads: Optional[int] = None, weights: str = "auto", check_weights: bool = True,
                 weights_backend: str = "pread") -> None:
        check_threads(threads)              # None, or 1 .. THREADS_PER_CPU × the CPUs (ConfigError)
        if weights not in ("auto", "load", "rows"):
            raise ConfigError(f"weights: expected 'auto', 'load' or 'rows', got {weights!r}")
        if weights_backend not in BACKENDS:
            raise ConfigError(f"weights_backend: expected one of {', '.join(BACKENDS)}, got {weights_backend!r}")
        self.path = Path(path)
        self.profile, self.detection = resolve_device(device)
        self.threads = threads
        self.check_weights = bool(check_weights)
        loaded = load(self.path, self.profile, threads, weights, self.check_weights, weights_backend)
        self.metadata = loaded.metadata
        self.notes: list[str] = loaded.notes
        self.weights_mode = loaded.weights_mode
        self._session, self._rows, self._weightfile = loaded.session, loaded.rows, loaded.weightfile
        self._inputs, self._outputs = loaded.inputs, loaded.outputs
        self._check_graph()

    # ------------------------------------------------------------------ description
    @property
    def inputs(self) -> list[TensorInfo]:
        """Graph inputs: ``input`` and, for stateful models, ``state_in_{i}``."""
        return list(self._inputs)

    @property
    def outputs(self) -> list[TensorInfo]:
        """Graph outputs: ``output``, ``state_out_{i}``, ``spikes_{i}``, ``charge_{i}``."""
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses (``["rows (numpy)"]`` when reading rows)."""
        return ["rows (numpy)"] if self._session is None else self._session.get_providers()

    @property
    def path_kind(self) -> str:
        """How the export computes its connections: "dense", "sparse" or "auto" (``zor.paths``)."""
        return self.metadata.path

    @property
    def max_batch(self) -> Optional[int]:
        """The largest batch this file accepts per call (a sparse export), None for any."""
        return self._limit

    @property
    def weights_bytes_read(self) -> int:
        """Bytes read from the external weights file so far (rows mode), 0 otherwise."""
        return self._weightfile.bytes_read if self._weightfile is not None else 0

    @property
    def task(self) -> str:
        """The task name from the metadata ("reconstruct", "classify", "generic", ...)."""
        return str(self.metadata.task.get("name", "generic"))

    @property
    def sizes(self) -> list[int]:
        return self.metadata.sizes

    @property
    def stateful(self) -> bool:
        return self.metadata.stateful

    @property
    def precision(self) -> str:
        """"float32", "int8" or "fp16" (from ``zor.quantization``)."""
        return self.metadata.precision

    def __repr__(self) -> str:
        return (f"Model({str(self.path)!r}, sizes={self.sizes}, task={self.task!r}, precision={self.precision!r}, "
                f"path={self.path_kind!r}, device={self.profile.name!r}, stateful={self.stateful}"
                + (f", weights={self.weights_mode!r}" if self._weightfile is not None else "") + ")")

    def _check_graph(self) -> None:
        where = str(self.path)
        names_in = {t.name: t for t in self._inputs}
        names_out = {t.name: t for t in self._outputs}
        sizes = self.sizes
        expected_in = {fmt.INPUT} | {s.input for s in self.metadata.state}
        if set(names_in) != expected_in:
            raise ModelFileError(f"{where}: graph inputs {sorted(names_in)} do not match the metadata: "
                                 f"expected {sorted(expected_in)}")
        for name, width in [(fmt.INPUT, sizes[0]), (fmt.OUTPUT, sizes[-1])] + \
                           [(s.input, s.size) for s in self.metadata.state] + \
                           [(s.output, s.size) for s in self.metadata.state]:
            t = names_in.get(name) or names_out.get(name)
            if t is None:
                raise ModelFileError(f"{where}: graph has no tensor {name!r}: expected it by the Zor format "
                                     f"(outputs found: {', '.join(sorted(names_out))})")
            if len(t.shape) != 2 or (t.shape[1] is not None and t.shape[1] != width):
                raise ModelFileError(f"{where}: graph tensor {name!r} has shape {t.shape}: expected (B, {width}) "
                                     "from the metadata's layer sizes")
        self._spike_names = [fmt.spikes(i) for i in range(len(sizes)) if fmt.spikes(i) in names_out]
        self._out_names = set(names_out)
        self._limit = None if self._rows is not None else self.metadata.max_batch
        self._width = sizes[0]
        shape = self.metadata.task.get("input", {}).get("shape") if self.metadata.task.get("source") == "nir" else None
        # a NIR import takes one step's events (B, *shape) too, flattened here to the graph's (B, n_0)
        self._event_shape = tuple(shape) if isinstance(shape, list) and len(shape) > 1 else None
        self._base_names = [fmt.OUTPUT] + [s.output for s in self.metadata.state]   # fetched by every call
        self._plain = not self.metadata.state and self._limit is None   # feeds are the input alone, any batch
        self._call = self._runner()
        self._lean = self._plain and self._rows is None and self._weightfile is None   # run(x): _run_output

    def _runner(self) -> Any:
        """``call(names, feeds) -> list of arrays``: rows, else onnxruntime's C session (its Python wrapper
        re-validates the feed names, which :meth:`_feeds` has already proven: ~1.3 µs of a ~16 µs call at
        batch 1, benchmarks/runtime_bench.py), else the public ``InferenceSession.run``."""
        if self._rows is not None:
            return self._rows.run
        inner = getattr(self._session, "_sess", None)
        if inner is None or not callable(getattr(inner, "run", None)):
            return self._session.run
        return lambda names, feeds: inner.run(names, feeds, None)

    # ------------------------------------------------------------------ running
    def _feeds(self, x: Any, state: Optional[Mapping[str, Any]] = None) -> dict[str, np.ndarray]:
        """Validated feeds: ``input`` plus every state input (given, else initial)."""
        given: dict[str, Any]
        if self._event_shape is not None and isinstance(x, np.ndarray) and x.shape[1:] == self._event_shape:
            x = x.reshape(len(x), -1)
        if type(x) is np.ndarray and not state and self._plain:
            return {fmt.INPUT: check_array(fmt.INPUT, x, self._width)}      # the common call: one array, stateless
        if not isinstance(x, np.ndarray) and isinstance(x, Mapping):
            given = dict(x)
            known = {t.name for t in self._inputs}
            unknown = sorted(set(given) - known)
            if unknown:
                raise ShapeError(f"unknown input name(s) {', '.join(map(repr, unknown))}: expected "
                                 f"{', '.join(sorted(known))}")
            if fmt.INPUT not in given:
                raise ShapeError(f"missing input {fmt.INPUT!r}: expected a dict with {fmt.INPUT!r} "
                                 f"(and optionally {', '.join(s.input for s in self.metadata.state) or 'nothing else'}), "
                                 f"got keys {sorted(given)}")
        else:
            given = {fmt.INPUT: x}
        if state:
            given.update(state)
        feeds = {fmt.INPUT: check_array(fmt.INPUT, given[fmt.INPUT], self._width)}
        batch = feeds[fmt.INPUT].shape[0]
        limit = self._limit
        if limit is not None and batch > limit:
            raise ShapeError(f"{fmt.INPUT}: this sparse export takes at most {limit} row{'s' if limit > 1 else ''} per "
                             f"call ({self.metadata.paths.get('form')} form, zor-export --max-batch {limit}), got "
                             f"{batch}: split the batch, or use a dense export (--path dense) for large batches")
        for spec in self.metadata.state:
            if spec.input in given:
                feeds[spec.input] = check_array(spec.input, given[spec.input], spec.size, batch)
            else:
                feeds[spec.input] = initial_state(spec, batch)
        return feeds

    def _run(self, feeds: dict[str, np.ndarray], spikes: bool, extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
        names = self._base_names
        if spikes or extra:
            names = list(names)
        if spikes:
            if len(self._spike_names) != len(self.sizes):
                raise ModelFileError(f"{self.path}: spike rates asked for, but the graph has spike outputs "
                                     f"{self._spike_names}: expected spikes_0..spikes_{len(self.sizes) - 1}")
            names += self._spike_names
        out_names = self._out_names
        for name in extra:
            if name not in out_names:
                raise ShapeError(f"unknown output name {name!r}: expected one of {', '.join(sorted(out_names))}")
            if name not in names:
                names.append(name)
        values = self._checked_call(feeds, names)
        out = dict(zip(names, values))
        check_outputs(out, self._base_names, feeds)   # finite inputs, non-finite outputs: overflow (NonFiniteError)
        if spikes:
            out["spike_rates"] = np.array([float(np.mean(out[n])) for n in self._spike_names])
        return out

    def run(self, x: Any, spikes: bool = False, outputs: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """One call: ``run(x)`` or ``run({"input": x, "state_in_1": s})`` → dict of named arrays.

        Returns ``output`` (B, n_L) and, for stateful models, ``state_out_{i}``. With
        ``spikes=True`` also ``spikes_{i}`` (bool, B × n_i) and ``spike_rates`` (L,):
        the share of units that spiked in each layer, over the batch. ``outputs``
        names extra graph outputs to fetch (e.g. ``charge_1``).
        """
        if self._lean and not spikes and not outputs and type(x) is np.ndarray:
            return self._run_output(x)
        if isinstance(outputs, str):
            outputs = (outputs,)                     # one name, not its letters
        return self._run(self._feeds(x), spikes, outputs)

    def _run_output(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``run(x)`` of a stateless, in-memory model: the same checks and errors as :meth:`_run`, without
        its general bookkeeping (a few µs of a ~17 µs call at batch 1, benchmarks/runtime_bench.py)."""
        feeds = {fmt.INPUT: check_array(fmt.INPUT, x, self._width)}
        try:
            out = self._call(self._base_names, feeds)[0]
        except Exception as exc:  # validated inputs: memory ran out (InputError), else the model (ModelFileError)
            raise run_failure(self.path, exc, feeds, self.sizes) from None
        if not all_finite(out):
            check_outputs({fmt.OUTPUT: out}, self._base_names, feeds)    # raises NonFiniteError
        return {fmt.OUTPUT: out}

    def _checked_call(self, feeds: dict[str, np.ndarray], names: list[str]) -> list:
        """The graph (or the row runner) on validated feeds, its failures as typed errors; an external weights
        file is first checked unchanged since it was verified."""
        if self._weightfile is not None:
            self._weightfile.check_unchanged()
        try:
            return self._call(feeds, names) if self._rows is not None else self._call(names, feeds)
        except MemoryError as exc:
            raise run_failure(self.path, exc, feeds, self.sizes) from None
        except Exception as exc:  # validated inputs: memory ran out (InputError), else the model (ModelFileError)
            if self._rows is not None:
                raise
            raise run_failure(self.path, exc, feeds, self.sizes) from None

    def _step_input(self, x: np.ndarray) -> np.ndarray:
        """A running stream's ``input`` array checked as :meth:`_feeds` checks it (one step's events (B, *shape)
        of a NIR import flattened, the batch limit of a sparse file), without building the initial state."""
        if self._event_shape is not None and x.shape[1:] == self._event_shape:
            x = x.reshape(len(x), -1)
        x = check_array(fmt.INPUT, x, self._width)
        if self._limit is not None and x.shape[0] > self._limit:
            self._feeds(x)                           # raises the batch-limit error
        return x

    def _run_values(self, feeds: dict[str, np.ndarray]) -> list:
        """``output`` then every ``state_out_*`` (metadata order) for validated feeds: a stream step with the
        checks and typed errors of :meth:`_run`, without its bookkeeping (benchmarks/nir_fashion.py)."""
        names = self._base_names
        values = self._checked_call(feeds, names)
        for value in values:
            if not all_finite(value):
                check_outputs(dict(zip(names, values)), names, feeds)    # raises NonFiniteError
        return values

    def __call__(self, x: Any) -> np.ndarray:
        """``model(x)`` is ``model.run(x)["output"]``."""
        return self.run(x)[fmt.OUTPUT]

    def stream(self) -> Stream:
        """A :class:`Stream` carrying state between calls (stateful models only)."""
        if not self.stateful:
            raise StateError(f"{self.path.name} is stateless ({fmt.KEYS.STATEFUL} = false): expected a stateful "
                             "model for stream(); call run(x) instead, every call is independent")
        return Stream(self)


def initial_state(spec: StateSpec, batch: int) -> np.ndarray:
    """The state a fresh stream starts from: the metadata's ``initial`` broadcast to (B, n)."""
    init = np.asarray(spec.initial, dtype=np.float32)
    if init.ndim > 1 or (init.ndim == 1 and init.shape[0] != spec.size):
        raise ModelFileError(f"metadata state of layer {spec.layer}: initial value expected a number or "
                             f"{spec.size} numbers, got shape {init.shape}")
    return np.ascontiguousarray(np.broadcast_to(init, (batch, spec.size)), dtype=np.float32)

