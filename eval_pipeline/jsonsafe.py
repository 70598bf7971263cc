"""Strict-JSON-safe values: one converter for results that mix numpy, pandas and datetime values.

``json.dumps(to_jsonsafe(x), allow_nan=False)`` never fails: NaN, NaT and pandas' missing values become ``None``,
infinities the strings ``"inf"`` / ``"-inf"``, timestamps ISO strings, timedeltas ``str()``, and anything else that
JSON has no type for its ``str()``.
"""

import datetime as _dt
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["to_jsonsafe"]


def to_jsonsafe(obj: Any) -> Any:
    """Convert ``obj`` (recursively through dicts, lists, tuples, sets and arrays) into strict-JSON-safe values.

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonsafe({"n": np.int64(3), "x": float("nan"), "hi": np.inf, 1: (True, None)})
    {'n': 3, 'x': None, 'hi': 'inf', '1': [True, None]}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        if math.isnan(f):
            return None
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(obj, dict):
        return {str(k): to_jsonsafe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonsafe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [to_jsonsafe(v) for v in obj.tolist()]
    if obj is pd.NaT:
        return None
    if isinstance(obj, (pd.Timestamp, _dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (pd.Timedelta, _dt.timedelta)):
        return str(obj)
    try:
        if pd.isna(obj):
            return None
    except (TypeError, ValueError):
        pass
    return str(obj)
