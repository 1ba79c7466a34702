"""Strict JSON for the exported file's metadata: numpy values made plain, non-finite floats as strings.

Every structured ``zor.*`` value is strict JSON (:mod:`zor.common.format`): a
non-finite float is stored as the string ``"nan"``, ``"inf"`` or ``"-inf"``, numpy
scalars and arrays as plain numbers and lists.

Example:
    >>> import numpy as np
    >>> dumps({"rate": np.float32(0.5), "min": -np.inf, "rows": np.arange(2)})
    '{"rate":0.5,"min":"-inf","rows":[0,1]}'
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

__all__ = ["jsonable", "dumps"]


def jsonable(x: Any) -> Any:
    """Make ``x`` strict-JSON-safe: numpy scalars to Python, non-finite floats to strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return x
    return x


def dumps(x: Any) -> str:
    """``x`` as compact strict JSON (through :func:`jsonable`)."""
    return json.dumps(jsonable(x), allow_nan=False, separators=(",", ":"))
