"""Which connections go sparse: the path plan, and the spike rates it is made from.

Each connection j (layer j → j+1) is computed dense (a MatMul over every row of W_j)
or sparse (only the rows of the units that spiked: :mod:`zor.export.sparse`). The
plan (``zor.paths`` in the file) says which, and why:

- ``dense``: none sparse; ``sparse``: every dense-kind connection (conv connections
  have no sparse form and stay dense);
- ``auto``: those whose measured spike rate r (the union rate for the union form) is
  below the profile's break-even corrected for the fixed cost of the extra nodes:

      sparse  ⇔  r < r*(n_j, n_{j+1})

  where r* is the profile's break-even for this connection (:func:`effective_break_even`): in
  the batch-1 form, for a profile with a measured cost model by shape (``sparse_shape``, float32
  connections of N = n_j·n_{j+1} ≤ its ``max_synapses``)

      r* = r_be′ · (1 − S₀′/N − k/n_{j+1}) / (1 + φ/n_{j+1})

  (the sparse form's fixed nodes, S₀′, and its scan of every input, k per unit, paid in dense
  synapses; φ per active row: a narrow layer breaks even lower than a square one of the same
  N); otherwise, for a profile with measured points (``sparse_curve``, square layers), r*
  interpolated in log N between them; otherwise r_be · (1 − S₀/N) (r_be =
  ``profile.sparse_break_even``, S₀ = ``profile.sparse_min_synapses``: a connection of S₀
  synapses costs about as much dense as the sparse form's overhead).

The rates are measured on the dense float graph (:func:`measure_rates`): what the
device will run. ``max_batch`` = 1 gives the batch-1 form (the row's own spikes pick
the rows); more gives the union form (the units that spiked in any row of the batch).
Row groups (:func:`choose_groups`): a connection whose expected gathered block
(r · n_j · n_{j+1} · 4 bytes) exceeds ``SINGLE_GROUP_BYTES`` (4 MiB) splits its rows
into G contiguous groups of about ``GROUP_BYTES`` (2 MiB), at most ``MAX_GROUPS``.

Example:
    >>> from zor import Zor, Layer
    >>> from zor.devices import get
    >>> m = Zor([Layer(8), Layer(4), Layer(2)], seed=0)
    >>> plan = plan_paths(m, "sparse", get("generic"))
    >>> [c.path for c in plan.connections], plan.form, plan.max_batch
    (['sparse', 'sparse'], 'batch1', 1)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional, Sequence, Union

import numpy as np

from zor.common import format as fmt
from zor.common.errors import ConfigError, UnsupportedLayerError

from .jsonsafe import jsonable
from .registry import kind_of
from .session import Stepper

__all__ = ["REST_VALUES", "rest_value", "ConnectionPath", "PathPlan", "dense_plan", "plan_paths",
           "effective_break_even", "shape_model", "measure_rates", "choose_groups", "DEFAULT_MAX_BATCH", "GROUP_BYTES",
           "SINGLE_GROUP_BYTES", "MAX_GROUPS"]

# f(0): what a unit that did not spike sends on (its gated charge is 0)
REST_VALUES: dict[str, float] = {"identity": 0.0, "relu": 0.0, "tanh": 0.0, "sigmoid": 0.5}
DEFAULT_MAX_BATCH = 1
GROUP_BYTES = 2 << 20     # gathered bytes per row group (measured here: groups of ~2 MiB keep the copy in cache)
SINGLE_GROUP_BYTES = 4 << 20   # a gathered block up to this size stays in one group (stays in cache whole)
MAX_GROUPS = 16


def rest_value(activation: str) -> float:
    """f(0) for an activation name; UnsupportedLayerError for one without a sparse form."""
    if activation not in REST_VALUES:
        raise UnsupportedLayerError(f"no sparse form for activation {activation!r}: supported are "
                                    f"{sorted(REST_VALUES)}")
    return REST_VALUES[activation]


@dataclass(frozen=True)
class ConnectionPath:
    """How connection j (layer j → j+1) is computed, and why."""

    connection: int
    kind: str                            # kind of layer j+1: "dense" or "conv"
    path: str = "dense"                  # "dense" | "sparse"
    spike_rate: Optional[float] = None   # mean share of layer j's units spiking per row
    union_rate: Optional[float] = None   # share spiking in any row of a max_batch group
    precision: str = "float32"           # of a sparse connection's rows: "float32" | "int8"
    synapses: int = 0                    # n_j · n_{j+1}
    reason: str = ""
    groups: int = 1                      # row groups of a sparse connection (see emit_sparse)
    break_even: Optional[float] = None   # auto: the profile's break-even for this connection's shape

    def to_dict(self) -> dict[str, Any]:
        return {"connection": self.connection, "kind": self.kind, "path": self.path,
                "spike_rate": self.spike_rate, "union_rate": self.union_rate, "precision": self.precision,
                "synapses": self.synapses, "groups": self.groups, "reason": self.reason,
                **({} if self.break_even is None else {"break_even": self.break_even})}


@dataclass(frozen=True)
class PathPlan:
    """The path of every connection, and what the choice was made from (``zor.paths``)."""

    requested: str
    connections: tuple
    form: str = "batch1"
    max_batch: Optional[int] = None      # None: any batch (no sparse connection)
    profile: Optional[str] = None
    break_even: Optional[float] = None
    min_synapses: Optional[int] = None
    rates: dict = field(default_factory=dict)
    curve: tuple = ()                    # the profile's measured (synapses, break-even) points, if any
    shape_model: Optional[dict] = None   # the profile's cost model by shape (SparseShape), if any

    def get(self, j: int) -> ConnectionPath:
        return self.connections[j]

    def sparse(self) -> list[int]:
        """Indices of the sparse connections."""
        return [c.connection for c in self.connections if c.path == "sparse"]

    def with_precision(self, precisions: dict[int, str]) -> "PathPlan":
        """A copy with the rows of the given sparse connections in the given precision."""
        conns = tuple(replace(c, precision=precisions.get(c.connection, c.precision)) if c.path == "sparse" else c
                      for c in self.connections)
        return replace(self, connections=conns)

    def to_dict(self) -> dict[str, Any]:
        sparse = bool(self.sparse())
        return jsonable({"requested": self.requested, "profile": self.profile, "break_even": self.break_even,
                         "min_synapses": self.min_synapses, "curve": [list(c) for c in self.curve],
                         **({} if self.shape_model is None else {"shape_model": self.shape_model}),
                         "form": self.form if sparse else None,
                         "max_batch": self.max_batch if sparse else None, "rates": self.rates,
                         "connections": [c.to_dict() for c in self.connections]})


def _synapses(model, j: int) -> int:
    return int(model.layers[j].size) * int(model.layers[j + 1].size)


def dense_plan(model, requested: str = "dense", reason: str = "requested dense") -> PathPlan:
    """Every connection dense."""
    conns = tuple(ConnectionPath(j, kind_of(model.layers[j + 1]), "dense", synapses=_synapses(model, j), reason=reason)
                  for j in range(len(model.layers) - 1))
    return PathPlan(requested=requested, connections=conns)


def effective_break_even(profile, synapses: Union[int, tuple[int, int]], precision: str = "float32") -> float:
    """The spike rate below which the sparse form pays for a connection: ``synapses`` = (n_in, n_out), its
    shape, or N = n_in·n_out alone (the older call: no shape model).

    With the shape and a measured ``profile.sparse_shape`` (float32, N ≤ its ``max_synapses``): the cost
    model's r*(n_in, n_out) = r_be·(1 − S₀/N − k/n_out)/(1 + φ/n_out) (:class:`zor.devices.SparseShape`).
    Otherwise, with a measured ``profile.sparse_curve`` ((N_k, r_k), ...): r interpolated linearly in
    log N between the points, from 0 at S₀ up to the first point, r_last past the last.
    Without one: r_be · (1 − S₀/N), floored at 0. ``precision`` "int8" (int8 rows against the
    int8 dense graph) reads ``profile.sparse_int8_curve`` instead where the profile has one.
    """
    if isinstance(synapses, (tuple, list)):
        if len(synapses) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1
                                         for v in synapses):
            raise ConfigError(f"a connection's shape must be (n_in, n_out), two ints ≥ 1, got {synapses!r}")
        n_in, n_out = int(synapses[0]), int(synapses[1])
        shape = getattr(profile, "sparse_shape", None)
        if shape is not None and precision == "float32" and n_in * n_out <= shape.max_synapses:
            return shape.rate(n_in, n_out)
        synapses = n_in * n_out
    s0 = float(getattr(profile, "sparse_min_synapses", 0) or 0)
    n = float(max(1, synapses))
    points = getattr(profile, "sparse_int8_curve", ()) if precision == "int8" else ()
    curve = [(float(a), float(b)) for a, b in (points or getattr(profile, "sparse_curve", ()) or ())]
    if not curve:
        return max(0.0, float(profile.sparse_break_even) * (1.0 - s0 / n))
    if 0 < s0 < curve[0][0]:
        curve = [(s0, 0.0)] + curve
    if n <= curve[0][0]:
        return curve[0][1] if curve[0][0] != s0 else 0.0
    if n >= curve[-1][0]:
        return curve[-1][1]
    for (n0, r0), (n1, r1) in zip(curve, curve[1:]):
        if n0 <= n <= n1:
            return r0 + (r1 - r0) * math.log(n / n0) / math.log(n1 / n0)
    return curve[-1][1]  # pragma: no cover


def shape_model(profile) -> Optional[dict[str, Any]]:
    """The profile's ``sparse_shape`` as a dict for ``zor.paths`` (None without one)."""
    shape = getattr(profile, "sparse_shape", None)
    return None if shape is None else asdict(shape)


def measure_rates(model, float_proto, x: np.ndarray, steps: int = 1, max_batch: int = 1,
                  threads: int = 1) -> tuple[list[float], list[float]]:
    """(mean spike rate per layer, union rate per layer over groups of ``max_batch`` rows) on inputs x.

    The dense float graph runs on ``x`` (N, n_0), each row held for ``steps`` steps from
    rest (stateful models); every step counts. The union rate is the share of units
    that spike in at least one row of a group of ``max_batch`` consecutive rows.
    """
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise ConfigError(f"spike rates need inputs of shape (N, n_0) with N ≥ 1, got {x.shape}")
    n = len(model.layers)
    names = [fmt.spikes(i) for i in range(n)]
    stepper = Stepper(float_proto, threads=threads)
    group = max(1, int(max_batch))
    total = np.zeros(n)
    union = np.zeros(n)
    count = np.zeros(n)
    groups = np.zeros(n)
    for start in range(0, len(x), 256):
        xb = x[start:start + 256]
        stepper.reset(len(xb), sizes={i: l.size for i, l in enumerate(model.layers)})
        for _ in range(steps):
            out = stepper.step(xb, names)
            for i in range(n):
                s = np.asarray(out[fmt.spikes(i)], bool)
                total[i] += s.sum()
                count[i] += s.size
                for g0 in range(0, len(s), group):
                    block = s[g0:g0 + group]
                    union[i] += block.any(axis=0).mean()
                    groups[i] += 1
    return [float(v) for v in total / count], [float(v) for v in union / groups]


def plan_paths(
    model,
    requested: str,
    profile,
    rates: Optional[Sequence[float]] = None,
    union_rates: Optional[Sequence[float]] = None,
    max_batch: int = DEFAULT_MAX_BATCH,
    rates_source: str = "",
    rates_rows: int = 0,
    precision: str = "float32",
) -> PathPlan:
    """Choose dense or sparse per connection (see the module docstring); ``auto`` needs ``rates``."""
    if requested not in fmt.PATHS:
        raise ConfigError(f"path must be one of {', '.join(fmt.PATHS)}, got {requested!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ConfigError(f"max_batch must be an int ≥ 1 (rows per call the sparse form accepts), got {max_batch!r}")
    if precision not in ("float32", "int8"):
        raise ConfigError(f"sparse rows precision must be float32 or int8, got {precision!r}")
    n_conn = len(model.layers) - 1
    if requested == "auto" and (rates is None or len(rates) < n_conn):
        raise ConfigError("path 'auto' needs the measured spike rate of every layer but the last")
    max_batch = int(max_batch)
    form = "batch1" if max_batch == 1 else "union"
    conns = []
    for j in range(n_conn):
        kind = kind_of(model.layers[j + 1])
        syn = _synapses(model, j)
        rate = None if rates is None else float(rates[j])
        urate = None if union_rates is None else float(union_rates[j])
        rel = urate if (form == "union" and urate is not None) else rate
        groups = choose_groups(rel, int(model.layers[j].size), int(model.layers[j + 1].size),
                               1 if precision == "int8" else 4, **group_settings(profile))
        common = dict(connection=j, kind=kind, spike_rate=rate, union_rate=urate, synapses=syn)
        if kind != "dense":
            conns.append(ConnectionPath(path="dense", reason=f"{kind} connection: no sparse form", **common))
            continue
        rest_value(model.layers[j].activation)          # refuses activations without a sparse form
        if requested == "dense":
            conns.append(ConnectionPath(path="dense", reason="requested dense", **common))
        elif requested == "sparse":
            conns.append(ConnectionPath(path="sparse", precision=precision, reason="requested sparse", groups=groups,
                                        **common))
        else:
            conns.append(_auto_path(profile, (int(model.layers[j].size), int(model.layers[j + 1].size)), rel, form,
                                    precision, groups, common))
    sparse = any(c.path == "sparse" for c in conns)
    return PathPlan(requested=requested, connections=tuple(conns), form=form,
                    max_batch=max_batch if sparse else None, profile=getattr(profile, "name", None),
                    break_even=float(profile.sparse_break_even),
                    min_synapses=int(getattr(profile, "sparse_min_synapses", 0) or 0),
                    rates={"source": rates_source, "rows": int(rates_rows)} if rates is not None else {},
                    curve=tuple(tuple(c) for c in ((getattr(profile, "sparse_int8_curve", ()) if precision == "int8"
                                                    else ()) or getattr(profile, "sparse_curve", ()) or ())),
                    shape_model=(shape_model(profile) if requested == "auto" and precision == "float32"
                                 and form == "batch1" else None))


def _auto_path(profile, shape: tuple[int, int], rel: Optional[float], form: str, precision: str, groups: int,
               common: dict[str, Any]) -> ConnectionPath:
    """``auto`` for one dense connection: sparse below the profile's break-even for its shape (batch-1 form; the
    shape model was measured there) or its synapse count (union form)."""
    syn = shape[0] * shape[1]
    be = effective_break_even(profile, shape if form == "batch1" else syn, precision)
    what = (f"{'union rate' if form == 'union' else 'spike rate'} {rel:.4f} ({shape[0]}x{shape[1]}, "
            f"{syn:,} synapses)")
    if rel is not None and rel < be:
        return ConnectionPath(path="sparse", precision=precision, groups=groups, break_even=be,
                              reason=f"{what} < break-even {be:.4f}", **common)
    return ConnectionPath(path="dense", break_even=be, reason=f"{what} ≥ break-even {be:.4f}", **common)


def group_settings(profile) -> dict[str, int]:
    """The row-group sizes of ``profile`` (its ``sparse_group_bytes``, ``sparse_single_group_bytes``,
    ``sparse_max_groups``; this module's defaults for a profile without them), as choose_groups keywords."""
    return {"group_bytes": int(getattr(profile, "sparse_group_bytes", GROUP_BYTES)),
            "single_bytes": int(getattr(profile, "sparse_single_group_bytes", SINGLE_GROUP_BYTES)),
            "max_groups": int(getattr(profile, "sparse_max_groups", MAX_GROUPS))}


def choose_groups(rate: Optional[float], rows: int, width: int, itemsize: int = 4, *,
                  group_bytes: int = GROUP_BYTES, single_bytes: int = SINGLE_GROUP_BYTES,
                  max_groups: int = MAX_GROUPS) -> int:
    """Row groups of a sparse connection: the expected gathered block rate·rows·width·itemsize split into
    pieces of about ``group_bytes`` (at most ``max_groups``); one group when the rate is unknown or the
    block is at most ``single_bytes`` (defaults: ``GROUP_BYTES``, ``SINGLE_GROUP_BYTES``, ``MAX_GROUPS``; a
    device profile sets its own, :func:`group_settings`).

    Measured here (4096-wide float32 layer, one thread, bare sessions, 10 paired rounds each, median
    time against 2 MiB groups): 5 % (a 3.4 MB block) in one group instead of two 0.93-0.96×, the
    extra group's nodes cost more than the cache saves; 10 % in one group 0.94-0.95×, in two
    0.96-0.97×; larger blocks in larger groups were mixed (30 % in 5 groups 1.04-1.07×, 50 % in 4
    groups 1.29×), so above 4 MiB the 2 MiB groups stay (the AMD EPYC figures behind these defaults;
    an Intel Xeon with 2 MiB of L2 per core was fastest with groups of 0.6-1 MB at every rate, its
    profile's setting: docs/notes/sparse-avx512.md).
    """
    if rate is None or rows <= 1:
        return 1
    expected = float(rate) * rows * width * itemsize
    if expected <= single_bytes:
        return 1
    return int(min(max_groups, rows, max(1, math.ceil(expected / group_bytes))))
