"""One landed file → one snapshot part: the spec's columns with normalised types, sorted by (timestamp, id),
written once under a content address and never rewritten with other content::

    snapshots/<task>/parts/<part_id>.parquet

``part_id`` hashes the source file's sha256, the spec's columns (and which are the timestamp and the id), the part
layout version and how the part was sorted: the same file under the same spec always maps to the same part.

Memory, per file (files are processed one at a time):

- the source is hashed in fixed-size chunks (:meth:`Lake.sha256`), never read whole;
- a parquet source is read with only the spec's columns; a file whose columns take at most
  ``EVAL_SNAPSHOT_SORT_MAX_BYTES`` in memory (default 1 GiB; parquet: the uncompressed size of those columns from
  the footer; CSV: the file's size) is read whole, sorted and written: the bound is that file's columns, about twice
  over while sorting;
- a larger file is streamed in batches of ``STREAM_BATCH_ROWS`` rows, each batch sorted and written as its own row
  group: memory stays at a few batches, and the part is sorted within each row group rather than as a whole
  (``"order": "row_groups"`` in its manifest entry, and a different part id). Nothing downstream depends on the row
  order: the evaluation engine is order-free and predictions are matched by id.
"""

import hashlib
import os
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .lake import Lake
from .spec import EvalSpec

LAYOUT_VERSION = 1
SORT_MAX_BYTES_ENV = "EVAL_SNAPSHOT_SORT_MAX_BYTES"
DEFAULT_SORT_MAX_BYTES = 2**30
STREAM_BATCH_ROWS = 2**18
ROW_GROUP_ROWS = 2**18  # readers decode one row group at a time: this bounds a reader's memory too


class DataError(ValueError):
    """Input data that cannot be used; the message names the file and column."""


def parts_folder(task: str) -> str:
    return f"snapshots/{task}/parts"


def sort_max_bytes() -> int:
    raw = os.environ.get(SORT_MAX_BYTES_ENV, "").strip()
    try:
        value = int(raw) if raw else DEFAULT_SORT_MAX_BYTES
    except ValueError:
        value = -1
    if value < 0:
        raise DataError(f"{SORT_MAX_BYTES_ENV}={raw!r}: expected a number of bytes (0 or more)")
    return value


def format_of(rel: str) -> str:
    return "csv" if rel.lower().endswith(".csv") else "parquet"


def part_layout(spec: EvalSpec) -> str:
    """What a part's content depends on besides its source: the layout version, the spec's columns and which of
    them are the timestamp and the id. Parts are re-used only under the same layout."""
    key = (f"layout={LAYOUT_VERSION}\0columns={chr(1).join(spec.all_columns())}\0"
           f"timestamp={spec.columns.timestamp or ''}\0id={spec.columns.id}")
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def part_id(source_sha256: str, spec: EvalSpec, order: str) -> str:
    key = f"{part_layout(spec)}\0source={source_sha256}\0order={order}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def normalise_types(table: pa.Table, spec: EvalSpec, rel: str, lake: Lake, where: str | None = None) -> pa.Table:
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


def sort_rows(table: pa.Table, spec: EvalSpec) -> pa.Table:
    keys = ([(spec.columns.timestamp, "ascending")] if spec.columns.timestamp else []) + [(spec.columns.id, "ascending")]
    return table.sort_by(keys)


# -- reading a landed file in bounded memory -----------------------------------------------------------------------
class _Source:
    """A landed file opened for reading the spec's columns: its estimated in-memory size, then either all of it or
    batches. Read errors become DataError naming the file."""

    def __init__(self, lake: Lake, file: dict, columns: list[str], spec: EvalSpec):
        self.lake, self.rel, self.columns = lake, file["rel"], columns
        self.format = format_of(self.rel)
        self._file = None
        with self._reading():
            if self.format == "csv":
                with self._open() as fh, pacsv.open_csv(fh) as reader:  # the header (first block) only
                    names, self.schema = reader.schema.names, reader.schema
                self.estimated_bytes = file.get("size") or 0
            else:
                self._file = self._open()
                try:
                    self._pf = pq.ParquetFile(self._file)
                except BaseException:
                    self.close()
                    raise
                names, self.schema, meta = self._pf.schema_arrow.names, self._pf.schema_arrow, self._pf.metadata
                self.estimated_bytes = sum(
                    meta.row_group(g).column(i).total_uncompressed_size
                    for g in range(meta.num_row_groups) for i in range(meta.num_columns)
                    if meta.schema.column(i).path.split(".")[0] in columns)
        missing = [c for c in columns if c not in names]
        if missing:
            self.close()
            raise DataError(f"{lake.uri(self.rel)}: missing column(s) {missing} required by spec '{spec.task}' "
                            f"(file has {names})")

    def _open(self):
        # Arrow reads a local file natively (no Python file object in between); S3 goes through s3fs.
        return pa.OSFile(self.lake.path(self.rel), "rb") if self.lake.is_local else self.lake.open(self.rel)

    def _reading(self):
        return _read_errors(self.lake, self.rel, self.format)

    def read_all(self) -> pa.Table:
        with self._reading():
            if self.format == "csv":
                with self._open() as fh:
                    return pacsv.read_csv(fh, convert_options=pacsv.ConvertOptions(include_columns=self.columns))
            return self._pf.read(columns=self.columns)

    def batches(self) -> Iterator[pa.Table]:
        """The file in batches of about STREAM_BATCH_ROWS rows; an empty file gives one empty table."""
        some = False
        with self._reading():
            if self.format == "csv":
                opts = pacsv.ConvertOptions(include_columns=self.columns)
                with self._open() as fh, pacsv.open_csv(fh, convert_options=opts) as reader:
                    for batch in reader:
                        some = True
                        yield pa.Table.from_batches([batch])
            else:
                for batch in self._pf.iter_batches(batch_size=STREAM_BATCH_ROWS, columns=self.columns):
                    some = True
                    yield pa.Table.from_batches([batch])
        if not some:
            yield self.schema.empty_table().select(self.columns)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _read_errors:
    """Turn Arrow's read errors into a DataError that names the file and its format."""

    def __init__(self, lake: Lake, rel: str, fmt: str):
        self.lake, self.rel, self.format = lake, rel, fmt

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, FileNotFoundError):
            raise DataError(f"{self.lake.uri(self.rel)}: the file disappeared while it was read") from None
        if isinstance(exc, (pa.ArrowInvalid, OSError)):
            raise DataError(f"{self.lake.uri(self.rel)}: cannot be read as {self.format} (corrupt or truncated?): "
                            f"{exc}") from None
        return False


# -- writing a part ------------------------------------------------------------------------------------------------
class _HashingFile:
    """A write-only file that passes bytes through and keeps their sha256 and count: the part is hashed as it is
    written, not read back."""

    def __init__(self, inner):
        self._inner, self._digest, self.size = inner, hashlib.sha256(), 0

    def write(self, data) -> int:
        self._digest.update(data)
        self.size += len(data)
        return self._inner.write(data)

    def flush(self) -> None:
        self._inner.flush()

    def tell(self) -> int:
        return self.size

    @property
    def closed(self) -> bool:
        return False

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def _iso(value: pa.Scalar) -> str | None:
    return value.as_py().isoformat() if value.is_valid else None


def merge_time_ranges(ranges: list) -> list | None:
    """The earliest start and latest end of per-part [min, max] ISO timestamps (None where a part has none)."""
    present = [r for r in ranges if r is not None]
    if not present:
        return None
    lows = [r[0] for r in present if r[0] is not None]
    highs = [r[1] for r in present if r[1] is not None]
    return [min(lows, key=pd.Timestamp) if lows else None, max(highs, key=pd.Timestamp) if highs else None]


def write_part(lake: Lake, spec: EvalSpec, file: dict) -> dict:
    """Hash a landed file (``rel``, ``size``, ``mtime``), write its part, return the part's manifest entry."""
    rel = file["rel"]
    columns = spec.all_columns()
    digest, size = lake.sha256(rel)
    source_entry = {"path": rel, "size": size, "mtime": file.get("mtime"), "sha256": digest,
                    **({"etag": file["etag"]} if file.get("etag") else {})}
    source = _Source(lake, file, columns, spec)
    try:
        order = "part" if source.estimated_bytes <= sort_max_bytes() else "row_groups"
        out = f"{parts_folder(spec.task)}/{part_id(digest, spec, order)}.parquet"
        tables = iter([source.read_all()]) if order == "part" else source.batches()
        entry = _write_tables(lake, spec, out, rel, (sort_rows(normalise_types(t.select(columns), spec, rel, lake),
                                                               spec) for t in tables),
                              before_commit=lambda: _unchanged_since_listed(lake, file, size))
    finally:
        source.close()
    return {**entry, "order": order, "source": source_entry}


def _unchanged_since_listed(lake: Lake, file: dict, hashed_size: int) -> None:
    """The file was hashed, then parsed: if it was replaced meanwhile, the part would not be the hashed content."""
    now = lake.info(file["rel"])
    if (now["size"] != hashed_size or file.get("size") not in (None, hashed_size)
            or (file.get("mtime") is not None and now["mtime"] != file["mtime"])
            or (file.get("etag") is not None and now.get("etag") != file["etag"])):
        raise DataError(f"{lake.uri(file['rel'])}: the file changed while it was being read (size/mtime "
                        f"{file.get('size')}/{file.get('mtime')} when listed, {now['size']}/{now['mtime']} now); "
                        f"refresh again once the upload is complete")


def _write_tables(lake: Lake, spec: EvalSpec, out: str, rel: str, tables: Iterator[pa.Table], before_commit) -> dict:
    """Stream normalised tables into one parquet part (atomically), hashing it as it goes; ``before_commit`` may
    still refuse the part before it appears."""
    ts = spec.columns.timestamp
    rows, lows, highs, schema = 0, [], [], None
    with lake.atomic_open(out) as raw:
        sink = _HashingFile(raw)
        writer = None
        try:
            for table in tables:
                table = table.replace_schema_metadata(None)
                if writer is None:
                    schema = table.schema
                    writer = pq.ParquetWriter(sink, schema, compression="zstd")
                elif table.schema != schema:  # a CSV read in batches: a later batch typed differently
                    raise DataError(f"{lake.uri(rel)}: column types change within the file ({schema} then "
                                    f"{table.schema}); write it as parquet or with consistent values")
                writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
                rows += table.num_rows
                if ts and table.num_rows:
                    low, high = pc.min_max(table[ts]).values()
                    lows.append(_iso(low))
                    highs.append(_iso(high))
        finally:
            if writer is not None:
                writer.close()
        before_commit()
    time_range = merge_time_ranges([[lo, hi] for lo, hi in zip(lows, highs)]) if ts and rows else None
    return {"path": out, "rows": rows, "size": sink.size, "sha256": sink.hexdigest(), "time_range": time_range,
            "schema": {f.name: str(f.type) for f in schema}}
