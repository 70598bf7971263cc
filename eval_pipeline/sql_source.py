"""Warehouse sources: a SQL query or table, read through SQLAlchemy in batches, snapshotted into the lake like files.

A spec with ``data.sql`` instead of ``data.source``::

    data:
      sql:
        url_env: WAREHOUSE_URL           # the variable holding the SQLAlchemy URL; credentials never in the spec
        query: "select id, ts, a, b, y from flights where ts >= '2024-01-01'"   # or: table: analytics.flights
        batch_rows: 50000                # rows per fetch and per parquet part

What a refresh does:

1. Wraps the query (or table) as ``SELECT <the spec's columns> FROM (<query>) AS eval_source ORDER BY <timestamp>,
   <id>, <other columns>``: the database projects and orders the rows, so the same rows always come back in the
   same order, whatever the plan.
2. Streams them with a server-side cursor (SQLAlchemy ``stream_results`` + ``partitions(batch_rows)``): at most one
   batch is held here at a time.
3. Writes each batch, with the snapshot's type rules (integers int64, floats and decimals float64, timestamps UTC
   microseconds), as an immutable parquet part named by its own sha256: ``extracts/<task>/parts/<sha256>.parquet``.
   Unchanged rows give byte-identical parts, which already exist and are not rewritten.
4. Builds the snapshot from exactly those parts with the same code as landed files
   (:func:`eval_pipeline.snapshot.build_snapshot`); the parts, already normalised and in the query's order, are
   the snapshot's parts as they are (nothing is copied). Its id is the hash of the parts' sha256 (so of the rows, in
   order) and of the columns, never of the time of the query. Re-running on unchanged warehouse data gives the same
   snapshot id. The manifest adds ``sql``: the query text as run, its sha256, the URL variable's name, the row
   count and every part's sha256 and row count.

Nothing is written to the snapshot or to ``latest.json`` until every row was read: a query that fails (bad SQL, lost
connection) raises :class:`~eval_pipeline.snapshot.DataError` naming the spec key and the database's message, and the
previous snapshot stays the latest. The URL (and so its password) is never logged nor put in an error message.

Plain Python (no Dagster import).
"""

import hashlib
import io
import os
import re

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .lake import Lake
from .snapshot import DataError, Snapshot, _normalise_types, build_snapshot
from .spec import EvalSpec

EXTRACTS = "extracts"


def parts_prefix(task: str) -> str:
    return f"{EXTRACTS}/{task}/parts"


def _key(spec: EvalSpec) -> str:
    return "data.sql.query" if spec.data.sql.query is not None else "data.sql.table"


def _engine(spec: EvalSpec):
    import sqlalchemy as sa

    sql = spec.data.sql
    url = os.environ.get(sql.url_env)
    if not url:
        raise DataError(f"task '{spec.task}': data.sql.url_env names {sql.url_env}, which is not set (it must hold "
                        f"the warehouse's SQLAlchemy URL, e.g. postgresql+psycopg2://user:password@host/db)")
    try:
        return sa.create_engine(url, pool_pre_ping=False, poolclass=sa.pool.NullPool)
    except Exception as exc:  # noqa: BLE001 - ArgumentError, NoSuchModuleError, a missing driver...
        hint = ""
        if "psycopg" in str(exc) and url.startswith("postgresql:"):
            # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; the project ships psycopg2 (dagster-postgres)
            hint = " (write postgresql+psycopg2://..., the driver installed with the [postgres] extra)"
        raise DataError(f"task '{spec.task}': the URL in {sql.url_env} is not usable by SQLAlchemy: "
                        f"{_scrub(_first_line(exc), url)}{hint}") from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # the DBAPI error without SQLAlchemy's statement dump
    text = str(orig if orig is not None else exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # psycopg2: 'relation "x" does not exist' then "LINE 1: ..." and a caret under the wrapped statement: the first
    # line is the message
    return f"{type(orig if orig is not None else exc).__name__}: {lines[0] if lines else ''}"


def _scrub(text: str, url: str) -> str:
    """Remove the URL and its password from a message, should a driver ever echo them."""
    from sqlalchemy.engine import make_url

    text = text.replace(url, "<url>")
    try:
        password = make_url(url).password
    except Exception:  # noqa: BLE001
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text


def select_statement(spec: EvalSpec, dialect) -> str:
    """The statement run: the spec's columns of the query/table, ordered by timestamp, id, then every other column."""
    q = dialect.identifier_preparer.quote
    columns = spec.all_columns()
    sql = spec.data.sql
    if sql.table is not None:
        source = ".".join(q(part) for part in sql.table.split("."))
    else:
        source = "(" + re.sub(r"[\s;]+$", "", sql.query.strip()) + ") AS eval_source"
    first = ([spec.columns.timestamp] if spec.columns.timestamp else []) + [spec.columns.id]
    order = first + [c for c in columns if c not in first]
    return (f"SELECT {', '.join(q(c) for c in columns)} FROM {source} "
            f"ORDER BY {', '.join(q(c) for c in order)}")


def _to_table(rows, columns: list[str]) -> pa.Table:
    arrays = []
    for i, name in enumerate(columns):
        arr = pa.array([r[i] for r in rows])
        if pa.types.is_decimal(arr.type):
            arr = pc.cast(arr, pa.float64())
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=columns)


def _part_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _part_entry(rel: str, data: bytes, digest: str, table: pa.Table, spec: EvalSpec) -> dict:
    """The snapshot manifest's entry for an extract part (see eval_pipeline.snapshot): the part is its own source."""
    ts = spec.columns.timestamp
    time_range = None
    if ts and table.num_rows:
        time_range = [v.as_py().isoformat() if v.is_valid else None for v in pc.min_max(table[ts]).values()]
    return {"path": rel, "rows": table.num_rows, "size": len(data), "sha256": digest, "time_range": time_range,
            "schema": {f.name: str(f.type) for f in table.schema}, "order": "query",
            "source": {"path": rel, "size": len(data), "mtime": None, "sha256": digest}}


def extract(lake: Lake, spec: EvalSpec) -> tuple[list[dict], dict]:
    """Stream the rows into parts; returns (files for build_snapshot, the manifest's ``sql`` record)."""
    sql = spec.data.sql
    key = _key(spec)
    engine = _engine(spec)
    url = os.environ[sql.url_env]
    statement = select_statement(spec, engine.dialect)
    columns = spec.all_columns()
    files, parts, total = [], [], 0
    where = f"task '{spec.task}': {key}"
    try:
        with engine.connect() as conn:
            # run as written (no SQLAlchemy bind-parameter parsing of ':'); drivers with format/pyformat
            # paramstyles (psycopg2) still interpolate '%', so a literal '%' (LIKE 'x%') is doubled
            raw = statement.replace("%", "%%") if engine.dialect.paramstyle in ("format", "pyformat") else statement
            result = conn.execution_options(stream_results=True, max_row_buffer=sql.batch_rows).exec_driver_sql(raw)
            got = list(result.keys())
            if got != columns:  # a driver that renames columns; the query itself is checked by the database
                raise DataError(f"{where}: the warehouse returned columns {got}, expected {columns}")
            for rows in result.partitions(sql.batch_rows):
                table = _normalise_types(_to_table(rows, columns), spec, "", lake, where=where)
                data = _part_bytes(table)
                digest = hashlib.sha256(data).hexdigest()
                rel = f"{parts_prefix(spec.task)}/{digest}.parquet"
                if not lake.exists(rel):
                    lake.write_bytes(rel, data)
                files.append({"rel": rel, "size": len(data), "part": _part_entry(rel, data, digest, table, spec)})
                parts.append({"path": rel, "sha256": digest, "rows": table.num_rows})
                total += table.num_rows
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - the database's own error, whatever the driver
        import sqlalchemy as sa

        if not isinstance(exc, (sa.exc.SQLAlchemyError, OSError)):
            raise
        raise DataError(f"{where} failed on the warehouse ({sql.url_env}): "
                        f"{_scrub(_first_line(exc), url)}") from None
    finally:
        engine.dispose()
    if not files:
        raise DataError(f"{where}: the warehouse ({sql.url_env}) returned no rows")
    record = {"url_env": sql.url_env, "query": sql.query, "table": sql.table, "statement": statement,
              "query_sha256": hashlib.sha256(statement.encode()).hexdigest(), "rows": total,
              "batch_rows": sql.batch_rows, "parts": parts}
    return files, record


def refresh_sql_snapshot(lake: Lake, spec: EvalSpec, extra: dict | None = None) -> Snapshot:
    """Extract the warehouse rows and build (or re-use) their snapshot; see the module docstring."""
    files, record = extract(lake, spec)
    return build_snapshot(lake, spec, files, f"task '{spec.task}': {_key(spec)}", extra={"sql": record, **(extra or {})})
