"""Reading the input columns of one batch (pandas DataFrame or Arrow record batch / table), checked once for all tasks.

Every error names the column, what was expected, how many rows violate it and the first offending row (its index in
the whole input).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import EngineInputError


def as_batch_list(batches):
    if isinstance(batches, (pd.DataFrame, pa.RecordBatch, pa.Table)):
        return [batches]
    return batches


def column(batch, name: str):
    if isinstance(batch, pd.DataFrame):
        if name not in batch.columns:
            raise EngineInputError(f"column '{name}' is missing from the input (columns: {list(batch.columns)})")
        return batch[name]
    names = batch.schema.names
    if name not in names:
        raise EngineInputError(f"column '{name}' is missing from the input (columns: {names})")
    col = batch.column(names.index(name))
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col


def n_rows(batch) -> int:
    return len(batch) if isinstance(batch, pd.DataFrame) else batch.num_rows


def float_array(col, name: str, offset: int) -> np.ndarray:
    try:
        if isinstance(col, pd.Series):
            if col.dtype == object:
                col = pd.to_numeric(col)
            return col.to_numpy(dtype=np.float64, na_value=np.nan)
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (TypeError, ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise EngineInputError(f"column '{name}': expected numbers ({exc})") from None


def float_bits(col) -> int:
    """16 / 32 for half / single precision float input, else 64 (ints, decimals, objects are read as float64)."""
    if isinstance(col, pd.Series):
        dt = col.dtype
        return 8 * dt.itemsize if dt.kind == "f" and dt.itemsize in (2, 4) else 64
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    return 32 if pa.types.is_float32(t) else 16 if pa.types.is_float16(t) else 64


def raise_bad(name: str, what: str, bad: np.ndarray, values, offset: int):
    idx = np.flatnonzero(bad)
    first = int(idx[0])
    raise EngineInputError(
        f"column '{name}': expected {what}; {idx.size} row(s) violate it "
        f"(first at row {offset + first}: {values[first]!r})"
    )


def check_finite(x: np.ndarray, name: str, offset: int, what: str):
    bad = ~np.isfinite(x)
    if bad.any():
        raise_bad(name, what + " (no NaN/inf/null)", bad, x, offset)


def codes_and_uniques(col):
    """(codes with -1 for null, list of python values) for a slice column of one batch."""
    if isinstance(col, pd.Series):
        codes, uniques = pd.factorize(col, use_na_sentinel=True)
        uniq = [u.item() if hasattr(u, "item") else u for u in np.asarray(uniques, dtype=object)]
        return np.asarray(codes, dtype=np.int64), uniq
    if not pa.types.is_dictionary(col.type):
        col = col.dictionary_encode()
    idx = col.indices
    codes = pc.fill_null(pc.cast(idx, pa.int64()), -1).to_numpy(zero_copy_only=False)
    uniq = col.dictionary.to_pylist()
    return codes.astype(np.int64, copy=False), uniq


def check_probabilities(p: np.ndarray, name: str, offset: int, role: str, what: str):
    """Finite values in [0, 1]; ``what`` names them in the error (e.g. 'scores')."""
    check_finite(p, name, offset, f"finite {what} (role '{role}')")
    bad = (p < 0) | (p > 1)
    if bad.any():
        raise_bad(name, f"probabilities in [0, 1] (role '{role}')", bad, p, offset)
