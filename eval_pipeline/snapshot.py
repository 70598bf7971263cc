"""Dataset refresh: the files in a task's landing zone become one immutable, content-addressed snapshot.

A snapshot is a manifest of immutable parts, one per landed file (:mod:`eval_pipeline.snapshot_parts`)::

    snapshots/<task>/parts/<part_id>.parquet     one landed file's rows: the spec's columns, normalised types,
                                                 sorted by (timestamp, id); shared by every snapshot that has it
    snapshots/<task>/<snapshot_id>/manifest.json the parts in source-path order (below)
    snapshots/<task>/latest.json                 pointer, replaced atomically after the snapshot is complete

A snapshot is identified by the hash of its inputs (file names and their sha256) plus the columns the spec asks for,
so refreshing twice over the same files gives the same snapshot id and re-uses it.

Refreshing is incremental: a landed file whose (path, size, mtime; on S3 also ETag) equal a source of the latest
snapshot re-uses that source's sha256 and part without being read (the part is checked, from one listing of the
parts folder, to exist with the size, mtime and ETag recorded when it was written; a part whose stamp moved is
re-hashed against its sha256 and rebuilt from its source if it no longer matches). Only new or changed files are read: hashed in
chunks, then written as a part in bounded memory. A whole snapshot is re-used the same way, never by re-reading its data.

The manifest::

    {"task", "snapshot_id", "content_hash", "created_at", "rows", "schema": {column: arrow type},
     "time_range": [earliest, latest] (ISO, UTC; merged from the parts'), "data_sha256",
     "parts": [{"path", "rows", "size", "sha256", "time_range", "schema", "order", "source":
                {"path", "size", "mtime", "sha256", "etag" (S3 only)}}, ...],
     "part_layout": what the parts were built for (layout version, columns, timestamp and id; parts of another
                    layout are never re-used),
     "source_files": [{"path", "size", "mtime", "sha256", "rows"}, ...]}   (the parts' sources, flat)

A part's ``order`` says how its rows are sorted by (timestamp, id): ``part`` (the whole part), ``row_groups`` (each
row group: a file too large to sort in memory, see :mod:`eval_pipeline.snapshot_parts`) or ``query`` (a SQL
extract: the query's ORDER BY). A SQL part is its own source (``mtime`` null).

``data_sha256`` is the sha256 of the parts' sha256 hex digests in manifest order, each followed by a newline: it
pins the snapshot's bytes without one file holding them all. Parts whose column types differ (int64 in one file,
double in another; a column all null in one) are read with the types unified (Arrow's permissive promotion), as one
concatenated table would have; types that cannot be unified are refused naming both files and the column.

A task whose spec has ``data.sql`` reads a warehouse query or table instead (eval_pipeline.sql_source): its rows are
extracted in batches into content-addressed, already normalised parquet parts (``extracts/<task>/parts/``), and
those parts are the snapshot's parts as they are.
"""

import datetime as dt
import hashlib
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .lake import Lake, LakeError
from .snapshot_parts import (DataError, format_of, merge_time_ranges, normalise_types, part_layout, parts_folder,
                             write_part)
from .spec import EvalSpec

DATA_SUFFIXES = (".parquet", ".pq", ".csv")
_normalise_types = normalise_types  # the SQL source's name for it
__all__ = ["DataError", "Snapshot", "build_snapshot", "eval_rows", "iter_rows", "latest_pointer", "list_source_files",
           "load_snapshot", "read_snapshot_table", "read_window", "refresh_files_snapshot"]


@dataclass(frozen=True)
class Snapshot:
    task: str
    snapshot_id: str
    manifest: dict

    @property
    def folder(self) -> str:
        return f"snapshots/{self.task}/{self.snapshot_id}"

    @property
    def manifest_path(self) -> str:
        return f"{self.folder}/manifest.json"

    @property
    def parts(self) -> list[dict]:
        """The manifest's part entries in order (a snapshot of the earlier one-file layout reads as one part)."""
        if "parts" in self.manifest:
            return self.manifest["parts"]
        return [{"path": f"{self.folder}/data.parquet", "rows": self.manifest["rows"],
                 "schema": self.manifest["schema"], "time_range": self.manifest.get("time_range")}]

    @property
    def part_paths(self) -> list[str]:
        return [p["path"] for p in self.parts]


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
        files = [f for f in files if format_of(f["rel"]) == spec.data.format]
    return files


def _read_file(lake: Lake, rel: str, columns: list[str], spec: EvalSpec) -> tuple[pa.Table, str]:
    """One landed file's columns, whole, and its sha256: for callers that need a few rows of a small file
    (registration's probe). Refresh never reads a file whole this way."""
    from .snapshot_parts import _Source

    digest, _ = lake.sha256(rel)
    source = _Source(lake, lake.info(rel), columns, spec)
    try:
        return source.read_all().select(columns), digest
    finally:
        source.close()


def refresh_files_snapshot(lake: Lake, spec: EvalSpec, extra: dict | None = None) -> Snapshot:
    """Build (or re-use) the snapshot of everything in the landing zone (:func:`eval_pipeline.refresh.refresh_snapshot`
    picks this or the warehouse source)."""
    files = list_source_files(lake, spec)
    if not files:
        raise DataError(f"no data files (*.parquet, *.csv) under {lake.uri(source_prefix(lake, spec))} "
                        f"for task '{spec.task}'")
    return build_snapshot(lake, spec, files, lake.uri(source_prefix(lake, spec)), extra)


def build_snapshot(lake: Lake, spec: EvalSpec, files: list[dict], where: str, extra: dict | None = None) -> Snapshot:
    """The snapshot of exactly these lake files (dicts with ``rel``, ``size`` and ``mtime``), in this order; ``where``
    names them in errors; ``extra`` is added to a new snapshot's manifest (the SQL source's query and parts).

    A file dict with a ``part`` entry (a manifest part entry: the SQL source's extracts) is used as that part as is.
    Any other file re-uses the latest snapshot's part for the same (path, size, mtime), or is read and written as a
    new part."""
    columns = spec.all_columns()
    previous = _previous_parts(lake, spec)
    listing = _part_listing(lake, [parts_folder(spec.task)] + [posixpath.dirname(p["path"]) for p in previous.values()])
    parts = []
    for f in files:
        entry = f.get("part") or _reusable_part(lake, previous, f, listing)
        if entry is None:
            entry = write_part(lake, spec, f)
            entry["written"] = _written(lake.info(entry["path"]))
            listing[entry["path"]] = {"size": entry["size"], **entry["written"]}
        parts.append(entry)
    schema = _schema_strings(lake, parts, where)

    fingerprint = hashlib.sha256()
    for p in parts:
        fingerprint.update(f"{p['source']['path']}\0{p['source']['sha256']}\n".encode())
    fingerprint.update(("\0".join(columns)).encode())
    if (extra or {}).get("suites"):  # the suites' snapshot ids (eval_pipeline.suites): a case dropped in a suite
        fingerprint.update("".join(f"\nsuite {k}\0{v}" for k, v in sorted(extra["suites"].items())).encode())
    content_hash = fingerprint.hexdigest()
    snapshot_id = content_hash[:16]
    snap_folder = f"snapshots/{spec.task}/{snapshot_id}"
    old = _existing_manifest(lake, snap_folder)
    if old is not None and old.get("parts") == parts:
        manifest = old  # the same parts, all present with their sizes: nothing to write
    else:
        manifest = {
            "task": spec.task, "snapshot_id": snapshot_id, "content_hash": content_hash,
            "data_sha256": parts_sha256(parts),
            "rows": sum(p["rows"] for p in parts), "schema": schema,
            "parts": parts, "part_layout": part_layout(spec),
            "source_files": [{**p["source"], "rows": p["rows"]} for p in parts],
            "time_range": merge_time_ranges([p["time_range"] for p in parts]),
            # a manifest rewritten for the same content (a part rebuilt, a file touched) keeps its creation time
            "created_at": (old or {}).get("created_at") or dt.datetime.now(dt.timezone.utc).isoformat(),
            **(extra or {}),
        }
        lake.write_json(f"{snap_folder}/manifest.json", manifest)
    lake.write_json(latest_pointer(spec.task), {"snapshot_id": snapshot_id})
    return Snapshot(spec.task, snapshot_id, manifest)


def parts_sha256(parts: list[dict]) -> str:
    """The manifest's ``data_sha256``: sha256 over the parts' sha256 hex digests, in order, one per line."""
    return hashlib.sha256("".join(f"{p['sha256']}\n" for p in parts).encode()).hexdigest()


def _previous_parts(lake: Lake, spec: EvalSpec) -> dict[tuple, dict]:
    """The latest snapshot's part entries by their source's (path, size, mtime); {} without a usable one, or when
    its parts were built for other columns (the spec changed)."""
    try:
        manifest = load_snapshot(lake, spec.task).manifest
    except (DataError, FileNotFoundError, LakeError, KeyError, TypeError):
        return {}
    if manifest.get("part_layout") != part_layout(spec):
        return {}
    return {(p["source"]["path"], p["source"]["size"], p["source"]["mtime"]): p
            for p in manifest.get("parts", []) if p.get("source", {}).get("mtime") is not None}


def _part_listing(lake: Lake, folders: list[str]) -> dict[str, dict]:
    """Size, mtime (and ETag on S3) of every file in these folders: one listing per folder, not one request per part."""
    listing = {}
    for folder in sorted(set(folders)):
        listing.update({f["rel"]: {"size": f["size"], **_written(f)} for f in lake.find(folder)})
    return listing


def _written(info: dict) -> dict:
    """What a part looked like right after it was written: a later in-place change moves its mtime (or ETag)."""
    return {"mtime": info.get("mtime"), **({"etag": info["etag"]} if info.get("etag") else {})}


def _reusable_part(lake: Lake, previous: dict[tuple, dict], file: dict, listing: dict[str, dict]) -> dict | None:
    """The previous part of an unchanged file (same path, size, mtime) whose part is present and intact.

    A part listed with its recorded size, mtime and ETag is taken as written (nothing is read). A part whose mtime or
    ETag moved (something wrote to it in place, or a manifest from before parts recorded them) is re-hashed: kept if
    its sha256 still matches the manifest, rebuilt from its source otherwise."""
    if file.get("mtime") is None:
        return None  # no modification time: the file cannot be trusted unchanged without reading it
    entry = previous.get((file["rel"], file.get("size"), file.get("mtime")))
    if entry is None or entry["source"].get("etag") != file.get("etag"):
        return None  # new, or replaced (on S3 the ETag tells within LastModified's second)
    listed = listing.get(entry["path"])
    if listed is None or listed["size"] != entry["size"]:
        return None  # its part is gone or truncated
    if entry.get("written") and all(listed.get(k) == v for k, v in entry["written"].items()):
        return entry
    digest, _ = lake.sha256(entry["path"])
    if digest != entry["sha256"]:
        return None  # changed in place at the same size: rebuilt from the landed file
    return {**entry, "written": {k: v for k, v in listed.items() if k != "size"}}


def _existing_manifest(lake: Lake, folder: str) -> dict | None:
    try:
        return lake.read_json(f"{folder}/manifest.json")
    except (FileNotFoundError, LakeError):
        return None


def unified_arrow_schema(lake: Lake, parts: list[dict], where: str | None = None) -> pa.Schema:
    """The schema every part is read as. Parts with equal manifest schemas share one footer read; parts that differ
    are unified by Arrow (int64 with double, null with anything), as concatenating them would. Incompatible types
    raise DataError naming the files (their sources) and the columns."""
    groups: dict[tuple, dict] = {}  # sorted: a manifest read back from JSON has its keys sorted
    for p in parts:
        groups.setdefault(tuple(sorted(p["schema"].items())), p)
    schemas = [_part_schema(lake, p) for p in groups.values()]
    if len(schemas) == 1:
        return schemas[0]
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        # Name the file(s) and column(s) that disagree with the first file, not just Arrow's "Field a ...".
        reps = list(groups.values())
        first, first_path = reps[0]["schema"], lake.uri(_source_path(reps[0]))
        diffs = [f"{lake.uri(_source_path(p))}: column {name!r} is {t}, but {first_path} has {first[name]}"
                 for p in reps[1:] for name, t in p["schema"].items()
                 if name in first and t != first[name] and not _promotable(t, first[name])]
        raise DataError(f"files under {where or 'the snapshot'} have incompatible column types: "
                        + ("; ".join(diffs[:5]) or str(exc))) from None


def _schema_strings(lake: Lake, parts: list[dict], where: str) -> dict[str, str]:
    """The manifest's ``schema``: read from no file when every part has the same one."""
    if len({tuple(sorted(p["schema"].items())) for p in parts}) == 1:
        return dict(parts[0]["schema"])
    return {f.name: str(f.type) for f in unified_arrow_schema(lake, parts, where)}


def _source_path(part: dict) -> str:
    return part.get("source", {}).get("path", part["path"])


def _promotable(a: str, b: str) -> bool:
    return "null" in (a, b) or {a, b} == {"int64", "double"}


def _part_schema(lake: Lake, part: dict) -> pa.Schema:
    pf = lake.parquet_file(part["path"])
    try:
        return pf.schema_arrow.remove_metadata()
    finally:
        pf.close(force=True)


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
              start=None, end=None, batch_size: int = 250_000,
              parts: list[int] | None = None) -> Iterator[pa.RecordBatch]:
    """Stream a snapshot's rows part by part in manifest order, optionally restricted to a timestamp window
    [start, end) of ``timestamp`` (the spec's timestamp column: parts whose time range lies outside the window are
    skipped unread). ``parts``: only these part indices (0-based, into the manifest's parts), in the order given:
    a shard of the snapshot. Batches have the snapshot's (unified) column types whatever part they come from."""
    windowed = bool(timestamp and (start is not None or end is not None))
    read_cols = list(dict.fromkeys(columns + ([timestamp] if windowed else [])))
    entries = snapshot.parts
    unified = None
    for index in (range(len(entries)) if parts is None else parts):
        part = entries[index]
        if windowed and _outside(part.get("time_range"), start, end):
            continue
        cast = None
        if part.get("schema") not in (None, snapshot.manifest["schema"]):
            unified = unified or unified_arrow_schema(lake, entries)
            cast = pa.schema([unified.field(c) for c in read_cols])
        pf = lake.parquet_file(part["path"])
        try:
            for batch in pf.iter_batches(batch_size=batch_size, columns=read_cols):
                if cast is not None:
                    batch = batch.cast(cast)
                mask = _window_mask(batch, timestamp, start, end)
                if mask is not None:
                    batch = batch.filter(mask)
                if batch.num_rows:
                    yield batch.select(columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise LakeError(f"{lake.uri(part['path'])} could not be read as parquet: {exc}") from None
        finally:
            pf.close(force=True)


def _outside(time_range: list | None, start, end) -> bool:
    """True when a part's [earliest, latest] timestamps cannot meet the window [start, end) (no timestamp at all:
    no row can be in any window)."""
    if not time_range or time_range[0] is None:
        return True
    return ((start is not None and _utc(time_range[1]) < _utc(start))
            or (end is not None and _utc(time_range[0]) >= _utc(end)))


def read_snapshot_table(lake: Lake, snapshot: Snapshot, columns: list[str] | None = None) -> pa.Table:
    """A snapshot's rows as one Arrow table, parts in manifest order: for small data only (tests, a few callers
    that need every row at once); everything else streams with :func:`iter_rows`."""
    columns = list(snapshot.manifest["schema"]) if columns is None else columns
    batches = list(iter_rows(lake, snapshot, columns))
    if batches:
        return pa.Table.from_batches(batches)
    schema = unified_arrow_schema(lake, snapshot.parts)
    return pa.schema([schema.field(c) for c in columns]).empty_table()


def eval_rows(lake: Lake, snapshot: Snapshot, spec: EvalSpec, columns: list[str], batch_size: int = 250_000,
              parts: list[int] | None = None):
    """The rows a task is evaluated on: the snapshot within data.evaluation_start/end (of ``parts`` only, if given)."""
    return iter_rows(lake, snapshot, columns, timestamp=spec.columns.timestamp, start=spec.data.evaluation_start,
                     end=spec.data.evaluation_end, batch_size=batch_size, parts=parts)


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
