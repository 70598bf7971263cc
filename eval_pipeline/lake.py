"""The lake: every artifact lives under one root URI, a local folder or ``s3://bucket/prefix``.

All I/O goes through fsspec (and pyarrow on top of fsspec file objects), so local and S3 share one code path.
Writes are atomic: a writer produces a temporary object next to the target and moves it into place only when it is
complete, so a crash mid-write leaves the previous good output readable. On S3 an object appears whole or not at all:
writes stream through a multipart upload of fixed-size blocks (EVAL_S3_BLOCK_SIZE bytes, default 32 MiB, at least
5 MiB), so memory stays at about one block whatever the object's size; the object (and so the new version) appears
only at CompleteMultipartUpload, and a failed write aborts the upload, leaving the previous version in place.

Layout (relative to the root) is documented in README.md; the helpers in this module build those paths.
"""

import contextlib
import hashlib
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

DEFAULT_ROOT_ENV = "EVAL_LAKE_ROOT"


class LakeError(RuntimeError):
    """A lake operation failed; the message names the path."""


def default_root() -> str:
    return os.environ.get(DEFAULT_ROOT_ENV) or str(Path.cwd() / "lake")


def _env_number(name: str, default: float, cast=float):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise LakeError(f"{name}={raw!r} is not a number") from None
    if value <= 0:
        raise LakeError(f"{name}={raw!r} must be positive")
    return value


def s3_storage_options() -> dict[str, Any]:
    """Options for s3fs, read from the environment; credentials stay with the standard AWS chain.

    EVAL_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL) points at a non-AWS endpoint; retries use botocore's standard mode so
    transient faults (throttling, 5xx, dropped connections) back off and retry instead of failing the run.
    EVAL_S3_MAX_ATTEMPTS (default 8) bounds botocore's attempts per request; EVAL_S3_CONNECT_TIMEOUT (default 5 s)
    and EVAL_S3_READ_TIMEOUT (default 30 s) bound each attempt. s3fs's own retry loop (which also re-reads a body
    whose connection dropped mid-transfer, something botocore does not retry) is set by S3_FS_RETRIES below.
    """
    endpoint = os.environ.get("EVAL_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
    opts: dict[str, Any] = {
        "config_kwargs": {"retries": {"max_attempts": _env_number("EVAL_S3_MAX_ATTEMPTS", 8, int),
                                      "mode": "standard"},
                          "connect_timeout": _env_number("EVAL_S3_CONNECT_TIMEOUT", 5.0),
                          "read_timeout": _env_number("EVAL_S3_READ_TIMEOUT", 30.0)},
        "skip_instance_cache": True,
        # No listings cache: several processes share one lake, and a listing cached by this process would call an
        # object another process wrote since (a new snapshot part in a folder listed before) missing.
        "use_listings_cache": False,
    }
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


S3_BLOCK_SIZE_ENV = "EVAL_S3_BLOCK_SIZE"
DEFAULT_S3_BLOCK_SIZE = 32 * 2**20  # S3 allows 10,000 parts: 32 MiB blocks bound an object at ~320 GiB
S3_MIN_BLOCK_SIZE = 5 * 2**20  # S3's (and s3fs's) smallest part but the last
HASH_CHUNK = 8 * 2**20


def s3_block_size() -> int:
    """Bytes per multipart block of an S3 write (and so the memory one writer holds), from EVAL_S3_BLOCK_SIZE."""
    size = _env_number(S3_BLOCK_SIZE_ENV, DEFAULT_S3_BLOCK_SIZE, int)
    if size < S3_MIN_BLOCK_SIZE:
        raise LakeError(f"{S3_BLOCK_SIZE_ENV}={size} is below S3's smallest multipart part ({S3_MIN_BLOCK_SIZE} bytes)")
    return size


# s3fs retries some errors itself, on top of botocore (and a body read that dropped mid-transfer, which botocore
# does not). Not a constructor argument: s3fs passes unknown options on to aiobotocore's session, which rejects them.
S3_FS_RETRIES = 2


def _clean_rel(rel: str) -> str:
    """Normalise a lake-relative path and refuse anything that would escape the root."""
    rel = rel.replace("\\", "/")
    if rel.startswith("/") or "://" in rel:
        raise LakeError(f"lake path {rel!r} must be relative to the lake root")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise LakeError(f"lake path {rel!r} tries to leave the lake root ('..' is not allowed)")
    return "/".join(parts)


class Lake:
    """A root URI plus atomic read/write helpers. Cheap to construct; holds an fsspec filesystem."""

    def __init__(self, root: str | None = None, storage_options: dict[str, Any] | None = None):
        root = root or default_root()
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip("/")
        self.protocol = root.split("://", 1)[0] if "://" in root else "file"
        if storage_options is None and self.protocol == "s3":
            storage_options = s3_storage_options()
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **(storage_options or {}))
        if self.protocol in ("s3", "s3a"):
            self.fs.retries = S3_FS_RETRIES
        self.is_local = self.protocol in ("file", "local")
        if self.is_local:
            os.makedirs(self._root_path, exist_ok=True)

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    # -- paths ---------------------------------------------------------------------------------------------------
    def path(self, rel: str) -> str:
        """Filesystem path (without protocol) for a lake-relative path."""
        rel = _clean_rel(rel)
        return posixpath.join(self._root_path, rel) if rel else self._root_path

    def uri(self, rel: str) -> str:
        """Full URI (with protocol) for display and for reports."""
        rel = _clean_rel(rel)
        return f"{self.root}/{rel}" if rel else self.root

    def rel(self, fs_path: str) -> str:
        """Inverse of path(): the lake-relative form of a filesystem path returned by ls/glob."""
        fs_path = fs_path.rstrip("/")
        root = self._root_path.rstrip("/")
        if fs_path == root:
            return ""
        if not fs_path.startswith(root + "/"):
            raise LakeError(f"{fs_path!r} is outside the lake root {self.root}")
        return fs_path[len(root) + 1:]

    # -- queries -------------------------------------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def ls(self, rel: str, detail: bool = False) -> list:
        """Direct children of a folder (lake-relative names), [] if it does not exist. Temp files are hidden."""
        p = self.path(rel).rstrip("/")
        entries = [(self.rel(name), e) for name, e in self._listing("ls", rel) if name != p]
        return [{**e, "rel": r} for r, e in entries] if detail else [r for r, _ in entries]

    def find(self, rel: str) -> list[dict]:
        """All files below a folder with size, modification time and (object stores) ETag, sorted by path."""
        return [{"rel": self.rel(name), "size": info.get("size"), "mtime": _mtime(info), "etag": _etag(info)}
                for name, info in self._listing("find", rel)]

    def _listing(self, how: str, rel: str) -> list[tuple[str, dict]]:
        """fsspec's detailed ``ls`` or ``find`` of a folder as (name, info) sorted by name, without the temp files of
        writes in progress; [] if the folder does not exist."""
        try:
            found = getattr(self.fs, how)(self.path(rel), detail=True)
        except FileNotFoundError:
            return []
        items = found.items() if isinstance(found, dict) else ((e["name"], e) for e in found)
        named = ((name.rstrip("/"), info) for name, info in items)
        return sorted(((n, i) for n, i in named if not posixpath.basename(n).startswith(".tmp-")), key=lambda t: t[0])

    def info(self, rel: str) -> dict:
        info = self.fs.info(self.path(rel))
        return {"rel": _clean_rel(rel), "size": info.get("size"), "mtime": _mtime(info), "etag": _etag(info)}

    # -- reads ---------------------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise FileNotFoundError(f"not found in the lake: {self.uri(rel)}") from None

    def sha256(self, rel: str) -> tuple[str, int]:
        """(sha256 hex digest, size in bytes) of a lake file, read in chunks: memory does not grow with the file."""
        digest, size = hashlib.sha256(), 0
        try:
            with self.fs.open(self.path(rel), "rb", block_size=HASH_CHUNK) as fh:
                while chunk := fh.read(HASH_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
        except FileNotFoundError:
            raise FileNotFoundError(f"not found in the lake: {self.uri(rel)}") from None
        return digest.hexdigest(), size

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode("utf-8")

    def read_json(self, rel: str) -> Any:
        raw = self.read_bytes(rel)
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise LakeError(f"{self.uri(rel)} is not valid JSON: {exc}") from None

    def open(self, rel: str, mode: str = "rb"):
        return self.fs.open(self.path(rel), mode)

    def parquet_file(self, rel: str) -> pq.ParquetFile:
        """Open a parquet file for streaming; a corrupt or truncated file raises LakeError naming it."""
        try:
            # pre_buffer=False: pyarrow's default pre-buffers every column chunk of the row groups a read asks for,
            # i.e. the whole file for iter_batches over all of it (measured: +75 MB per 100 MB file read); streaming
            # readers must stay bounded whatever the file size
            return pq.ParquetFile(self.fs.open(self.path(rel), "rb"), pre_buffer=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"not found in the lake: {self.uri(rel)}") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise LakeError(f"{self.uri(rel)} is not a readable parquet file (corrupt or truncated?): {exc}") from None

    def read_parquet(self, rel: str, columns: list[str] | None = None) -> pd.DataFrame:
        pf = self.parquet_file(rel)
        try:
            return pf.read(columns=columns).to_pandas()
        except (pa.ArrowInvalid, OSError) as exc:
            raise LakeError(f"{self.uri(rel)} could not be read as parquet: {exc}") from None

    def iter_batches(self, rel: str, columns: list[str] | None = None, batch_size: int = 250_000) -> Iterator[pa.RecordBatch]:
        pf = self.parquet_file(rel)
        yield from pf.iter_batches(batch_size=batch_size, columns=columns)

    # -- atomic writes -------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_open(self, rel: str) -> Iterator[Any]:
        """Yield a binary file; the target appears only if the block finishes without an exception."""
        target = self.path(rel)
        parent = posixpath.dirname(target)
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            tmp = posixpath.join(parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}")
            try:
                with open(tmp, "wb") as fh:
                    yield fh
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            yield from self._s3_upload(target)

    def _s3_upload(self, target: str) -> Iterator[Any]:
        """s3fs's streaming writer: one block in memory, uploaded as a part of a multipart upload whenever it fills
        (an object smaller than one block is a single PUT at close). Nothing is visible before the upload completes;
        on an exception the upload is aborted (its parts are deleted) and the previous object stays."""
        fh = self.fs.open(target, "wb", block_size=s3_block_size())
        try:
            yield fh
            fh.close()  # uploads the last block, then CompleteMultipartUpload (or the one PUT)
        except BaseException:
            # AbortMultipartUpload (a no-op when no part was sent yet). Should the abort itself fail, the upload
            # stays invisible (a bucket lifecycle rule reaps it) and the original error is the one worth raising.
            with contextlib.suppress(Exception):
                fh.discard()
            fh.closed = True  # or the file's finaliser would commit what was buffered
            raise

    def write_bytes(self, rel: str, data: bytes) -> str:
        with self.atomic_open(rel) as fh:
            fh.write(data)
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode("utf-8"))

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_bytes(rel, dumps_canonical(obj).encode("utf-8"))

    def write_parquet(self, rel: str, data: pd.DataFrame | pa.Table) -> str:
        table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        with self.atomic_open(rel) as fh:
            pq.write_table(table, fh, compression="zstd")
        return self.uri(rel)

    @contextlib.contextmanager
    def parquet_writer(self, rel: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """Stream record batches into one parquet file, atomically."""
        with self.atomic_open(rel) as fh:
            writer = pq.ParquetWriter(fh, schema, compression="zstd")
            try:
                yield writer
            finally:
                writer.close()

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create an object only if it does not exist yet (True), else leave it alone (False): the primitive under
        locks. Locally O_CREAT|O_EXCL; on S3 a conditional PUT (If-None-Match: *)."""
        target = self.path(rel)
        if self.is_local:
            os.makedirs(posixpath.dirname(target), exist_ok=True)
            try:
                fd = os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        try:
            self.fs.pipe_file(target, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:  # some endpoints answer a failed precondition without s3fs mapping it
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def delete(self, rel: str, recursive: bool = False) -> None:
        if self.exists(rel):
            self.fs.rm(self.path(rel), recursive=recursive)


def _etag(info: dict) -> str | None:
    """An object's ETag (None on a local disk): it changes with the content even when S3's one-second
    LastModified and the size do not (an object replaced within the same second)."""
    etag = info.get("ETag") or info.get("etag")
    return str(etag).strip('"') if etag else None


def _mtime(info: dict) -> float | None:
    for key in ("mtime", "LastModified", "last_modified", "created"):
        v = info.get(key)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            continue
    return None


def dumps_canonical(obj: Any) -> str:
    """Deterministic JSON: sorted keys, fixed separators, NaN/inf refused (they are not JSON)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"


def _json_default(o: Any) -> Any:
    import datetime as _dt

    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (_dt.datetime, _dt.date, pd.Timestamp)):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
