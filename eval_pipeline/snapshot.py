"""Dataset refresh: the files in a task's landing zone become one immutable, content-addressed snapshot.

A snapshot is identified by the hash of its inputs (file names and their sha256) plus the columns the spec asks for,
so refreshing twice over the same files gives the same snapshot id and re-uses it. Rows are sorted by
(timestamp, id) so the snapshot's bytes do not depend on the order files were listed or landed.

    snapshots/<task>/<snapshot_id>/data.parquet
    snapshots/<task>/<snapshot_id>/manifest.json
    snapshots/<task>/latest.json            pointer, replaced atomically after the snapshot is complete

A task whose spec has ``data.sql`` reads a warehouse query or table instead (eval_pipeline.sql_source): its rows are
extracted in batches into content-addressed parquet parts (``extracts/<task>/parts/``), and those parts become the
snapshot exactly as landed files do.
"""

import datetime as dt
import hashlib
import io
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .lake import Lake, LakeError
from .spec import EvalSpec

DATA_SUFFIXES = (".parquet", ".pq", ".csv")


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and column."""


@dataclass(frozen=True)
class Snapshot:
    task: str
    snapshot_id: str
    manifest: dict

    @property
    def folder(self) -> str:
        return f"snapshots/{self.task}/{self.snapshot_id}"

    @property
    def data_path(self) -> str:
        return f"{self.folder}/data.parquet"


def source_prefix(lake: Lake, spec: EvalSpec) -> str:
    src = spec.data.source  # a SQL task's: extracts/<task>/parts (EvalSpec._sql_landing)
    if "://" in src:
        # An absolute URI is allowed only if it lies inside the lake root (one root for every artifact).
        if not src.rstrip("/").startswith(lake.root):
            raise DataError(f"data.source {src!r} is outside the lake root {lake.root}")
        src = src.rstrip("/")[len(lake.root):].lstrip("/")
    return src


def list_source_files(lake: Lake, spec: EvalSpec) -> list[dict]:
    """Data files in the landing zone (recursively), sorted by path. Hidden and temp files are ignored.

    Empty for a SQL task (data.sql): its parts are written by its own refresh, never "landed", so the new-data sensor
    does not react to them; a SQL task is refreshed by its schedule or `eval-pipeline evaluate`."""
    if spec.data.sql is not None:
        return []
    files = [f for f in lake.find(source_prefix(lake, spec))
             if f["rel"].lower().endswith(DATA_SUFFIXES) and not posixpath.basename(f["rel"]).startswith((".", "_"))]
    if spec.data.format != "auto":
        files = [f for f in files if _format_of(f["rel"]) == spec.data.format]
    return files


def _format_of(rel: str) -> str:
    return "csv" if rel.lower().endswith(".csv") else "parquet"


def _read_file(lake: Lake, rel: str, columns: list[str], spec: EvalSpec) -> tuple[pa.Table, str]:
    raw = lake.read_bytes(rel)
    digest = hashlib.sha256(raw).hexdigest()
    try:
        if _format_of(rel) == "csv":
            table = pacsv.read_csv(io.BytesIO(raw))
        else:
            table = pq.read_table(io.BytesIO(raw))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{lake.uri(rel)}: cannot be read as {_format_of(rel)} (corrupt or truncated?): {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise DataError(f"{lake.uri(rel)}: missing column(s) {missing} required by spec '{spec.task}' "
                        f"(file has {table.column_names})")
    return table.select(columns), digest


def _normalise_types(table: pa.Table, spec: EvalSpec, rel: str, lake: Lake, where: str | None = None) -> pa.Table:
    """Make files that landed with slightly different physical types (int32 vs int64, ts units) concatenable."""
    where = where or lake.uri(rel)
    ts = spec.columns.timestamp
    if ts:
        col = table[ts]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                col = pa.array(pd.to_datetime(col.to_pandas(), utc=True), type=pa.timestamp("us", tz="UTC"))
            except (ValueError, TypeError) as exc:
                raise DataError(f"{where}: timestamp column {ts!r} is not parseable as datetimes: {exc}") from None
        elif pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.timestamp("us", tz=col.type.tz or "UTC"))
            if col.type.tz != "UTC":
                col = pc.cast(col, pa.timestamp("us", tz="UTC"))
        else:
            raise DataError(f"{where}: timestamp column {ts!r} has type {col.type}; expected a timestamp "
                            f"or an ISO date string")
        table = table.set_column(table.schema.get_field_index(ts), ts, col)
    fields = []
    for field in table.schema:
        t = field.type
        if pa.types.is_integer(t):
            t = pa.int64()
        elif pa.types.is_floating(t):
            t = pa.float64()
        elif pa.types.is_dictionary(t) or pa.types.is_large_string(t):
            t = pa.string()
        fields.append(pa.field(field.name, t))
    return table.cast(pa.schema(fields))


def refresh_files_snapshot(lake: Lake, spec: EvalSpec) -> Snapshot:
    """Build (or re-use) the snapshot of everything in the landing zone (:func:`eval_pipeline.refresh.refresh_snapshot`
    picks this or the warehouse source)."""
    files = list_source_files(lake, spec)
    if not files:
        raise DataError(f"no data files (*.parquet, *.csv) under {lake.uri(source_prefix(lake, spec))} "
                        f"for task '{spec.task}'")
    return build_snapshot(lake, spec, files, lake.uri(source_prefix(lake, spec)))


def build_snapshot(lake: Lake, spec: EvalSpec, files: list[dict], where: str, extra: dict | None = None) -> Snapshot:
    """The snapshot of exactly these lake files (dicts with ``rel`` and ``size``), in this order; ``where`` names
    them in errors; ``extra`` is added to a new snapshot's manifest (the SQL source's query and parts)."""
    columns = spec.all_columns()
    tables, sources = [], []
    for f in files:
        table, digest = _read_file(lake, f["rel"], columns, spec)
        tables.append(_normalise_types(table, spec, f["rel"], lake))
        sources.append({"path": f["rel"], "sha256": digest, "rows": table.num_rows, "size": f["size"]})
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # Name the file(s) and column(s) that disagree with the first file, not just Arrow's "Field a ...".
        first = tables[0].schema
        diffs = [f"{lake.uri(f['rel'])}: column {field.name!r} is {field.type}, but {lake.uri(files[0]['rel'])} "
                 f"has {first.field(field.name).type}"
                 for f, t in zip(files[1:], tables[1:]) for field in t.schema
                 if field.type != first.field(field.name).type]
        raise DataError(f"files under {where} have incompatible column types: "
                        + ("; ".join(diffs[:5]) or str(exc))) from None
    sort_keys = ([(spec.columns.timestamp, "ascending")] if spec.columns.timestamp else []) + [(spec.columns.id, "ascending")]
    table = table.sort_by(sort_keys).replace_schema_metadata(None)

    fingerprint = hashlib.sha256()
    for s in sources:
        fingerprint.update(f"{s['path']}\0{s['sha256']}\n".encode())
    fingerprint.update(("\0".join(columns)).encode())
    content_hash = fingerprint.hexdigest()
    snapshot_id = content_hash[:16]
    snap_folder = f"snapshots/{spec.task}/{snapshot_id}"
    manifest = _reusable_manifest(lake, snap_folder)
    if manifest is None:
        lake.write_parquet(f"{snap_folder}/data.parquet", table)
        time_range = None
        if spec.columns.timestamp and table.num_rows:
            mn, mx = pc.min_max(table[spec.columns.timestamp]).values()
            time_range = [mn.as_py().isoformat() if mn.is_valid else None, mx.as_py().isoformat() if mx.is_valid else None]
        manifest = {
            "task": spec.task, "snapshot_id": snapshot_id, "content_hash": content_hash,
            "data_sha256": hashlib.sha256(lake.read_bytes(f"{snap_folder}/data.parquet")).hexdigest(),
            "rows": table.num_rows, "schema": {f.name: str(f.type) for f in table.schema},
            "source_files": sources, "time_range": time_range,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            **(extra or {}),
        }
        lake.write_json(f"{snap_folder}/manifest.json", manifest)
    lake.write_json(latest_pointer(spec.task), {"snapshot_id": snapshot_id})
    return Snapshot(spec.task, snapshot_id, manifest)


def _reusable_manifest(lake: Lake, folder: str) -> dict | None:
    """The manifest of an existing snapshot whose data file is intact (its sha256 matches); None to rebuild it."""
    try:
        manifest = lake.read_json(f"{folder}/manifest.json")
        data = lake.read_bytes(f"{folder}/data.parquet")
    except (FileNotFoundError, LakeError):
        return None
    return manifest if hashlib.sha256(data).hexdigest() == manifest.get("data_sha256") else None


def latest_pointer(task: str) -> str:
    """The pointer to a task's newest snapshot, replaced atomically once that snapshot is complete."""
    return f"snapshots/{task}/latest.json"


def load_snapshot(lake: Lake, task: str, snapshot_id: str | None = None) -> Snapshot:
    if snapshot_id is None:
        pointer = latest_pointer(task)
        if not lake.exists(pointer):
            raise DataError(f"task '{task}' has no snapshot yet in {lake.root}; run the dataset refresh first")
        snapshot_id = lake.read_json(pointer)["snapshot_id"]
    try:
        manifest = lake.read_json(f"snapshots/{task}/{snapshot_id}/manifest.json")
    except (FileNotFoundError, LakeError) as exc:
        raise DataError(f"snapshot {snapshot_id} of task '{task}' is unreadable: {exc}") from None
    return Snapshot(task, snapshot_id, manifest)


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _window_mask(batch: pa.RecordBatch, column: str | None, start, end) -> pa.Array | None:
    if column is None or (start is None and end is None):
        return None
    ts = batch.column(column)
    mask = None
    for bound, op in ((start, pc.greater_equal), (end, pc.less)):
        if bound is None:
            continue
        scalar = pa.scalar(_utc(bound).to_pydatetime(), type=ts.type)
        m = op(ts, scalar)
        mask = m if mask is None else pc.and_(mask, m)
    return mask


def iter_rows(lake: Lake, snapshot: Snapshot, columns: list[str], *, timestamp: str | None = None,
              start=None, end=None, batch_size: int = 250_000) -> Iterator[pa.RecordBatch]:
    """Stream a snapshot's rows in snapshot order, optionally restricted to a timestamp window [start, end)."""
    read_cols = list(dict.fromkeys(columns + ([timestamp] if timestamp and (start or end) else [])))
    for batch in lake.iter_batches(snapshot.data_path, columns=read_cols, batch_size=batch_size):
        mask = _window_mask(batch, timestamp, start, end)
        if mask is not None:
            batch = batch.filter(mask)
        if batch.num_rows:
            yield batch.select(columns)


def eval_rows(lake: Lake, snapshot: Snapshot, spec: EvalSpec, columns: list[str], batch_size: int = 250_000):
    """The rows a task is evaluated on: the snapshot within data.evaluation_start/end."""
    return iter_rows(lake, snapshot, columns, timestamp=spec.columns.timestamp, start=spec.data.evaluation_start,
                     end=spec.data.evaluation_end, batch_size=batch_size)


def read_window(lake: Lake, snapshot: Snapshot, spec: EvalSpec, columns: list[str], window) -> pd.DataFrame:
    """Rows in a drift window: start/end dates, or the last N days before the snapshot's newest timestamp."""
    ts = spec.columns.timestamp
    start, end = window.start, window.end
    if window.last_days is not None:
        if not ts:
            raise DataError(f"task '{spec.task}': a last_days window needs columns.timestamp")
        newest = pd.Timestamp(snapshot.manifest["time_range"][1])
        start, end = newest - pd.Timedelta(days=window.last_days), newest + pd.Timedelta(microseconds=1)
    batches = list(iter_rows(lake, snapshot, columns, timestamp=ts, start=start, end=end))
    if not batches:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
    return pa.Table.from_batches(batches).to_pandas()
