"""Scoring: turn a registered model version into predictions for a snapshot's evaluation rows, in batches.

Flavors
- ``sklearn-skops``: loaded with skops; only types skops trusts by default plus the operator's allowlist (the spec's
  ``model.trusted_types`` and EVAL_TRUSTED_TYPES, comma-separated) are allowed. The file's own list of types is never
  trusted.
- ``sklearn-joblib``: a pickle; refused unless the operator sets EVAL_ALLOW_PICKLE=1 (a warning is logged each time
  one is loaded), and then loaded only after its sha256 matched the manifest (Registry.verified_artifact).
- ``predictions``: scores computed elsewhere (a service, an LLM pipeline), a parquet keyed by row id.

Output: ``predictions/<task>/<snapshot_id>/<model>/<version>.parquet`` with the id column and the score columns, in
snapshot order, one row per evaluation row. It is re-used when the same snapshot and artifact hash were scored before.
"""

import collections
import contextlib
import hashlib
import io
import itertools
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .lake import Lake
from .registry import ModelManifest, Registry, RegistryError
from .settings import PICKLE_WARNING, load_settings, pickle_refusal
from .snapshot import Snapshot, eval_rows
from .spec import EvalSpec

log = logging.getLogger(__name__)


class ScoringError(ValueError):
    """A model that could not be scored; the message names the model version and what was wrong."""


# task types whose model outputs one real number per row through predict() (ranking: higher = ranked earlier)
PREDICT_TASKS = ("regression", "ranking")


def score_columns(spec: EvalSpec) -> list[str]:
    if spec.task_type in ("binary_classification", "ranking"):
        return ["score"]
    if spec.task_type == "regression":
        return ["prediction"]
    if not spec.model.classes:
        raise ScoringError(f"task '{spec.task}': multiclass tasks need model.classes (the class order)")
    return [f"proba_{c}" for c in spec.model.classes]


def trusted_types_from_env() -> list[str]:
    return list(load_settings(warn=False).trusted_types)


def trusted_types_for(spec: EvalSpec, extra: list[str] | None = None) -> list[str]:
    """The operator's allowlist for a task: the spec's model.trusted_types plus ``extra`` (default EVAL_TRUSTED_TYPES)."""
    extra = trusted_types_from_env() if extra is None else list(extra)
    return list(dict.fromkeys(list(spec.model.trusted_types) + extra))


@dataclass
class LoadedModel:
    manifest: ModelManifest
    model: Any = None                       # an estimator for sklearn flavors
    predictions: pd.DataFrame | None = None  # indexed by id for the predictions flavor


def load_skops(data: bytes, trusted: list[str], what: str):
    """Load skops bytes allowing skops' default types plus ``trusted`` only; ScoringError naming ``what`` otherwise."""
    import skops.io as sio

    try:
        untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in trusted]
    except Exception as exc:  # noqa: BLE001 - not a skops file at all
        raise ScoringError(f"{what}: not a readable skops file: {type(exc).__name__}: {exc}") from None
    if untrusted:
        raise ScoringError(f"{what}: the skops file contains types that are not trusted: {untrusted}. If you trust "
                           f"them, list them in the spec's model.trusted_types or in EVAL_TRUSTED_TYPES "
                           f"(comma-separated).")
    try:
        return sio.loads(data, trusted=trusted or None)
    except Exception as exc:  # noqa: BLE001 - any failure here is the artifact's fault
        raise ScoringError(f"{what}: skops could not load the artifact: {type(exc).__name__}: {exc}") from None


# One run loads the same artifact up to six times (scoring, robustness, each suite, prediction drift): the last
# deserialised models are kept, keyed by the sha256 of the bytes they came from (and the allowlist they were checked
# against). The bytes are still read and their sha256 verified on every load, so a file changed since is refused
# as before; only skops' type check and deserialisation (0.1-0.5 s each here) are not repeated. Models are used
# read-only (predict / predict_proba).
_LOADED: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
_LOADED_MAX = 2  # a run's candidate and baseline
_LOADED_LOCK = threading.Lock()


def _deserialised(key: tuple, load):
    with _LOADED_LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    model = load()
    with _LOADED_LOCK:
        _LOADED[key] = model
        while len(_LOADED) > _LOADED_MAX:
            _LOADED.popitem(last=False)
    return model


def load_model(registry: Registry, manifest: ModelManifest, trusted_types: list[str] | None = None,
               allow_pickle: bool | None = None) -> LoadedModel:
    """Load a verified artifact. ``trusted_types`` default: EVAL_TRUSTED_TYPES; ``allow_pickle`` default:
    EVAL_ALLOW_PICKLE (both parsed by eval_pipeline.settings)."""
    ref = manifest.ref
    if manifest.flavor == "sklearn-joblib":  # refused before the bytes are even read
        if not (load_settings(warn=False).allow_pickle if allow_pickle is None else allow_pickle):
            raise ScoringError(pickle_refusal(f"model {ref}"))
    data = registry.verified_artifact(manifest)  # sha256 checked before anything is deserialised
    if manifest.flavor == "sklearn-skops":
        trusted = trusted_types if trusted_types is not None else trusted_types_from_env()
        key = ("sklearn-skops", manifest.sha256, tuple(sorted(trusted)))
        return LoadedModel(manifest, model=_deserialised(key, lambda: load_skops(data, trusted, f"model {ref}")))
    if manifest.flavor == "sklearn-joblib":
        import joblib

        log.warning("unpickling model %s (sha256 %s…): %s", ref, manifest.sha256[:16], PICKLE_WARNING)

        def unpickle():
            try:
                return joblib.load(io.BytesIO(data))
            except Exception as exc:  # noqa: BLE001
                raise ScoringError(f"model {ref}: joblib could not load the artifact: {exc}") from None

        return LoadedModel(manifest, model=_deserialised(("sklearn-joblib", manifest.sha256), unpickle))
    if manifest.flavor == "predictions":
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001
            raise ScoringError(f"model {ref}: predictions file is not readable parquet: {exc}") from None
        return LoadedModel(manifest, predictions=frame)
    raise RegistryError(f"model {ref}: unknown flavor {manifest.flavor!r}")


def _predict_batch(loaded: LoadedModel, features: pd.DataFrame, spec: EvalSpec) -> np.ndarray:
    ref = loaded.manifest.ref
    try:
        if spec.task_type in PREDICT_TASKS:
            out = loaded.model.predict(features)
        else:
            out = loaded.model.predict_proba(features)
    except Exception as exc:  # noqa: BLE001 - a model that raises is reported, not propagated raw
        raise ScoringError(f"model {ref} raised while scoring {len(features)} rows: {type(exc).__name__}: {exc}") from None
    if spec.task_type not in PREDICT_TASKS:
        out = _columns_in_spec_order(out, getattr(loaded.model, "classes_", None), spec, f"model {ref}")
    return shape_output(out, len(features), spec, f"model {ref}")


def _columns_in_spec_order(out, model_classes, spec: EvalSpec, what: str):
    """predict_proba's columns follow the model's own ``classes_`` (scikit-learn sorts them), not the spec's
    ``model.classes``: reorder them by name, so a spec listing early / on_time / late is not scored with p(late) in
    the on_time column. A model without ``classes_`` is trusted to follow the spec's order."""
    if model_classes is None or np.ndim(out) != 2:
        return out
    have = [str(c) for c in np.asarray(model_classes).tolist()]
    want = [str(c) for c in (spec.model.classes or [])] if spec.task_type != "binary_classification" else ["0", "1"]
    if spec.task_type == "binary_classification":
        if have in (["0", "1"], ["False", "True"]) or len(have) != 2:
            return out  # shape_output takes column 1 = the positive class
        raise ScoringError(f"{what}: classes_ is {have}; a binary task needs the classes 0 and 1 (label 1 = positive)")
    missing = [c for c in want if c not in have]
    if missing or len(have) != len(want):
        raise ScoringError(f"{what}: the model's classes_ {have} do not match model.classes {want} of task "
                           f"'{spec.task}' (missing: {missing or 'none'}); list the model's classes in model.classes")
    return np.asarray(out)[:, [have.index(c) for c in want]]


def shape_output(out, n: int, spec: EvalSpec, what: str) -> np.ndarray:
    """A model's raw output for ``n`` rows as the score array of the task (binary: P(positive)), or ScoringError."""
    try:
        out = np.asarray(out, dtype="float64")
    except (TypeError, ValueError) as exc:
        raise ScoringError(f"{what}: the model's output is not numeric: {exc}") from None
    if spec.task_type == "binary_classification":
        if out.ndim == 2 and out.shape == (n, 2):
            out = out[:, 1]
        elif out.ndim != 1 or out.shape[0] != n:
            raise ScoringError(f"{what}: predict_proba returned shape {out.shape}; expected ({n}, 2) or ({n},)")
    elif spec.task_type in PREDICT_TASKS:
        out = out.reshape(-1) if out.ndim == 2 and out.shape[1] == 1 else out
        if out.shape != (n,):
            raise ScoringError(f"{what}: predict returned shape {out.shape}; expected ({n},)")
    else:
        k = len(spec.model.classes or [])
        if out.shape != (n, k):
            raise ScoringError(f"{what}: predict_proba returned shape {out.shape}; expected ({n}, {k})")
    return out


def _show(value: Any) -> str:
    """A row id as a user wrote it (7, 'abc'), not numpy's repr (np.int64(7))."""
    return repr(value.item() if hasattr(value, "item") else value)


def _check_scores(values: np.ndarray, ids: np.ndarray, spec: EvalSpec, ref: str) -> None:
    _refuse_rows(~np.isfinite(values), ids, spec, ref, "non-finite score(s) (NaN or inf)")
    if spec.task_type not in PREDICT_TASKS:
        _refuse_rows((values < 0) | (values > 1), ids, spec, ref, "score(s) outside [0, 1]", "; expected probabilities")


def _refuse_rows(bad: np.ndarray, ids: np.ndarray, spec: EvalSpec, ref: str, what: str, hint: str = "") -> None:
    """Raise when any row is bad (a row of a 2-D score array when any of its columns is), saying how many and the id
    of the first."""
    rows = bad.any(axis=1) if bad.ndim == 2 else bad
    if rows.any():
        i = int(np.flatnonzero(rows)[0])
        raise ScoringError(f"model {ref}: {int(rows.sum())} {what}, e.g. for {spec.columns.id}={_show(ids[i])}{hint}")


def predictions_path(spec: EvalSpec, snapshot: Snapshot, manifest: ModelManifest) -> str:
    return f"predictions/{spec.task}/{snapshot.snapshot_id}/{manifest.name}/{manifest.version}.parquet"


# A predictions file with at least this many rows is joined to the evaluation rows on disk (external_join), in
# bounded memory; smaller ones are looked up in memory (whole file in pandas: ~100 bytes per row). Same bytes out.
EXTERNAL_JOIN_ROWS = 2_000_000
COPY_CHUNK = 8 << 20


def score_model(lake: Lake, registry: Registry, spec: EvalSpec, snapshot: Snapshot, manifest: ModelManifest,
                trusted_types: list[str] | None = None, *, external_join: bool | None = None,
                backend=None) -> dict:
    """Score one model version on the evaluation rows; returns a summary (path, rows, cached, seconds).

    ``external_join``: for a predictions-flavor model, join on disk (True), in memory (False), or by the file's size
    (None: on disk from EXTERNAL_JOIN_ROWS rows). ``backend``: a shard backend (``dask_backend.DaskBackend``) that
    scores a model's snapshot parts on its workers (see :func:`_write_sharded`). The output's bytes depend on
    neither."""
    import time

    out_rel = predictions_path(spec, snapshot, manifest)
    meta_rel = out_rel.replace(".parquet", ".json")
    inputs = _scoring_inputs(spec, manifest)
    if lake.exists(meta_rel) and lake.exists(out_rel):
        meta = lake.read_json(meta_rel)
        # Re-use only what was scored from the same artifact on the same rows and columns: a spec whose evaluation
        # window or features changed must not be handed predictions for other rows.
        if meta.get("sha256") == manifest.sha256 and meta.get("inputs") == inputs:
            return {**meta, "cached": True}
    started = time.perf_counter()
    if manifest.flavor != "predictions" and not spec.columns.features:
        raise ScoringError(f"model {manifest.ref} ({manifest.flavor}) needs input columns, but spec '{spec.task}' "
                           f"lists no columns.features; list the model's features (only a predictions-flavor model "
                           f"needs none)")
    cols = score_columns(spec)
    id_col = spec.columns.id
    needed = [id_col] + ([] if manifest.flavor == "predictions" else list(spec.columns.features))
    shards = []
    if backend is not None and manifest.flavor != "predictions":
        from .evaluation_shards import snapshot_shards

        shards = snapshot_shards(lake, snapshot, spec)
    if len(shards) > 1 and manifest.flavor == "sklearn-joblib" and not load_settings(warn=False).allow_pickle:
        raise ScoringError(pickle_refusal(f"model {manifest.ref}"))  # this process's refusal, before any worker's
    with contextlib.ExitStack() as stack:
        if len(shards) > 1:
            rows = _write_sharded(lake, registry, spec, snapshot, manifest, trusted_types_for(spec, trusted_types),
                                  cols, needed, shards, backend, out_rel, meta_rel)
        else:
            if manifest.flavor == "predictions":
                scores = _prediction_scorer(stack, lake, registry, spec, snapshot, manifest, cols, external_join)
            else:
                loaded = load_model(registry, manifest, trusted_types_for(spec, trusted_types))
                features = list(spec.columns.features)
                scores = lambda batch, frame: _predict_batch(loaded, frame[features], spec)  # noqa: E731
            rows = _write_predictions(lake, spec, snapshot, manifest, cols, needed, scores, out_rel, meta_rel)
    meta = {"model": manifest.name, "version": manifest.version, "sha256": manifest.sha256,
            "flavor": manifest.flavor, "snapshot_id": snapshot.snapshot_id, "rows": rows,
            "path": out_rel, "score_columns": cols, "inputs": inputs}
    lake.write_json(meta_rel, meta)
    return {**meta, "cached": False, "seconds": round(time.perf_counter() - started, 3)}


def _write_predictions(lake: Lake, spec: EvalSpec, snapshot: Snapshot, manifest: ModelManifest, cols: list[str],
                       needed: list[str], scores, out_rel: str, meta_rel: str) -> int:
    """Stream the evaluation rows, score each batch with ``scores(batch, frame)``, write the predictions file."""
    batches = eval_rows(lake, snapshot, spec, needed, batch_size=spec.model.batch_size)
    first = next(batches, None)
    if first is None:  # checked before the writer opens: an empty window must not replace a good file
        raise ScoringError(f"task '{spec.task}': no evaluation rows in snapshot {snapshot.snapshot_id} "
                           f"(window {spec.data.evaluation_start} .. {spec.data.evaluation_end})")
    lake.delete(meta_rel)  # a crash between the two writes below must not pair an old summary with new scores
    with lake.parquet_writer(out_rel, _schema(spec, cols, snapshot)) as writer:
        rows = _score_into(writer, itertools.chain([first], batches), scores, spec, manifest, cols)
    return rows


def _score_into(writer, batches, scores, spec: EvalSpec, manifest: ModelManifest, cols: list[str]) -> int:
    """Score each batch and write it as one row group (id column and score columns); returns the rows written."""
    id_col, rows = spec.columns.id, 0
    for batch in batches:
        frame = batch.to_pandas()
        values = scores(batch, frame)
        _check_scores(values, frame[id_col].to_numpy(), spec, manifest.ref)
        data = {id_col: batch.column(id_col)}
        if values.ndim == 1:
            data[cols[0]] = pa.array(values, pa.float64())
        else:
            for j, c in enumerate(cols):
                data[c] = pa.array(values[:, j], pa.float64())
        writer.write_table(pa.table(data).cast(writer.schema))
        rows += len(frame)
    return rows


def _score_shard(lake: Lake, registry: Registry, spec: EvalSpec, snapshot: Snapshot, manifest: ModelManifest,
                 trusted: list[str], cols: list[str], needed: list[str], folder: str, shard) -> tuple[str, int]:
    """On a worker: one shard's evaluation rows scored into ``<folder>/<shard index>.parquet`` (the artifact is read
    and its sha256 verified there); returns (that piece's path, rows)."""
    loaded = load_model(registry, manifest, trusted)
    features = list(spec.columns.features)
    piece = f"{folder}/{shard.index:06d}.parquet"
    batches = eval_rows(lake, snapshot, spec, needed, batch_size=spec.model.batch_size, parts=list(shard.parts))
    with lake.parquet_writer(piece, _schema(spec, cols, snapshot)) as writer:
        rows = _score_into(writer, batches, lambda b, f: _predict_batch(loaded, f[features], spec), spec, manifest,
                           cols)
    return piece, rows


def _write_sharded(lake: Lake, registry: Registry, spec: EvalSpec, snapshot: Snapshot, manifest: ModelManifest,
                   trusted: list[str], cols: list[str], needed: list[str], shards: list, backend, out_rel: str,
                   meta_rel: str) -> int:
    """A model flavor scored one snapshot part per task on ``backend``'s workers, each into a piece in the lake (the
    storage workers and this process share), the pieces then copied row group by row group, in part order, into
    the output. Batches never span parts, so the output holds the same row groups in the same order as one process
    writes, with the same scores (each batch is the same rows through the same model): the same bytes (tested).
    This process holds one row group at a time; the pieces are deleted, whatever happens."""
    import functools
    import uuid

    folder = f"{out_rel[:-len('.parquet')]}.pieces-{uuid.uuid4().hex[:12]}"
    work = functools.partial(_score_shard, lake, registry, spec, snapshot, manifest, trusted, cols, needed, folder)
    try:
        pieces = list(backend.map(work, shards))
        lake.delete(meta_rel)  # as in _write_predictions: no old summary paired with new scores
        rows = 0
        with lake.parquet_writer(out_rel, _schema(spec, cols, snapshot)) as writer:
            for piece, n in pieces:
                pf = lake.parquet_file(piece)
                try:
                    for group in range(pf.metadata.num_row_groups):
                        writer.write_table(pf.read_row_group(group).cast(writer.schema))
                finally:
                    pf.close(force=True)
                rows += n
        log.info("model %s scored on %d shards (%d rows)", manifest.ref, len(pieces), rows)
        return rows
    finally:
        lake.delete(folder, recursive=True)


def _prediction_scorer(stack: contextlib.ExitStack, lake: Lake, registry: Registry, spec: EvalSpec,
                       snapshot: Snapshot, manifest: ModelManifest, cols: list[str], external: bool | None):
    """``scores(batch, frame)`` for a predictions-flavor model: the file is copied out of the lake while its sha256
    is checked (never whole in memory), then looked up in memory (small files) or joined on disk (large ones)."""
    from . import external_join as xj

    tmp = stack.enter_context(xj.new_workdir())
    local = _verified_copy(registry, manifest, tmp)
    try:
        pf = pq.ParquetFile(local)
    except Exception as exc:  # noqa: BLE001
        raise ScoringError(f"model {manifest.ref}: predictions file is not readable parquet: {exc}") from None
    id_col = spec.columns.id
    file_id = manifest.id_column or id_col
    score_cols = manifest.score_columns or cols
    if external is None:
        external = pf.metadata.num_rows >= EXTERNAL_JOIN_ROWS
    if not external:
        try:
            frame = pd.read_parquet(local)
        except Exception as exc:  # noqa: BLE001
            raise ScoringError(f"model {manifest.ref}: predictions file is not readable parquet: {exc}") from None
        lookup = _prediction_lookup(LoadedModel(manifest, predictions=frame), spec, cols)
        del frame
        return lambda batch, frame: _lookup_scores(lookup, frame[id_col], manifest.ref, id_col)
    have = _frame_columns(pf)
    missing = [c for c in [file_id, *score_cols] if c not in have]
    if missing:
        raise ScoringError(f"model {manifest.ref}: predictions file lacks column(s) {missing} (has {have})")
    ids = (b.column(0) for b in eval_rows(registry.lake, snapshot, spec, [id_col], batch_size=xj.READ_ROWS))
    joined, dups = xj.join_predictions(local, file_id, score_cols, ids, _schema(spec, cols, snapshot).field(id_col).type,
                                       int(snapshot.manifest.get("rows") or 0), tmp)
    if dups.count:
        raise ScoringError(f"model {manifest.ref}: predictions file has {dups.count} duplicate id(s), e.g. "
                           f"{file_id}={_show(dups.first_id)}; expected one score per row")
    return lambda batch, frame: _joined_scores(joined, frame[id_col], manifest.ref, id_col)


def _joined_scores(joined, ids: pd.Series, ref: str, id_col: str) -> np.ndarray:
    from .external_join import JoinError

    try:
        values, found = joined.take(len(ids))
    except JoinError as exc:
        raise ScoringError(f"model {ref}: {exc}") from None
    if not found.all():  # the in-memory lookup's error, word for word
        raise ScoringError(f"model {ref}: predictions do not cover the dataset: {int((~found).sum())} of {len(ids)} "
                           f"row ids in this batch have no score, e.g. {id_col}={_show(ids.iloc[int(np.flatnonzero(~found)[0])])}")
    return values[:, 0] if values.shape[1] == 1 else values


def _frame_columns(pf: pq.ParquetFile) -> list[str]:
    """The columns pandas would show for the file (its stored index columns become the index, not columns)."""
    meta = pf.schema_arrow.pandas_metadata or {}
    index = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [c for c in pf.schema_arrow.names if c not in index]


def _verified_copy(registry: Registry, manifest: ModelManifest, folder: str) -> str:
    """Copy the artifact to a local file in ``folder`` in chunks, hashing as it goes; refuse it (the registry's own
    words) unless its sha256 is the pinned one. Reading the local copy afterwards cannot see another version."""
    rel = registry.artifact_path(manifest)
    local = os.path.join(folder, "artifact.parquet")
    digest = hashlib.sha256()
    try:
        with registry.lake.open(rel, "rb") as src, open(local, "wb") as dst:
            while chunk := src.read(COPY_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
    except FileNotFoundError:
        raise RegistryError(f"model {manifest.ref}: artifact {registry.lake.uri(rel)} is missing") from None
    if digest.hexdigest() != manifest.sha256:
        raise RegistryError(f"model {manifest.ref}: artifact {registry.lake.uri(rel)} has sha256 {digest.hexdigest()}, "
                            f"but the manifest pins {manifest.sha256}; refusing to load it")
    return local


def _scoring_inputs(spec: EvalSpec, manifest: ModelManifest) -> dict:
    """What, besides the artifact and the snapshot, determines a predictions file (the cache key)."""
    return {"evaluation_start": spec.data.evaluation_start.isoformat() if spec.data.evaluation_start else None,
            "evaluation_end": spec.data.evaluation_end.isoformat() if spec.data.evaluation_end else None,
            "id": spec.columns.id, "timestamp": spec.columns.timestamp, "task_type": spec.task_type,
            "features": [] if manifest.flavor == "predictions" else list(spec.columns.features),
            "score_columns": score_columns(spec)}


def _schema(spec: EvalSpec, cols: list[str], snapshot: Snapshot) -> pa.Schema:
    id_type = snapshot.manifest["schema"][spec.columns.id]
    id_pa = {"int64": pa.int64(), "string": pa.string(), "double": pa.float64()}.get(id_type, pa.string())
    return pa.schema([pa.field(spec.columns.id, id_pa)] + [pa.field(c, pa.float64()) for c in cols])


def _prediction_lookup(loaded: LoadedModel, spec: EvalSpec, cols: list[str]) -> pd.DataFrame:
    m = loaded.manifest
    frame = loaded.predictions
    id_col = m.id_column or spec.columns.id
    score_cols = m.score_columns or cols
    missing = [c for c in [id_col, *score_cols] if c not in frame.columns]
    if missing:
        raise ScoringError(f"model {m.ref}: predictions file lacks column(s) {missing} (has {list(frame.columns)})")
    dup = frame[id_col].duplicated()
    if dup.any():
        raise ScoringError(f"model {m.ref}: predictions file has {int(dup.sum())} duplicate id(s), e.g. "
                           f"{id_col}={_show(frame.loc[dup, id_col].iloc[0])}; expected one score per row")
    out = frame.set_index(id_col)[score_cols]
    out.columns = cols
    return out


def _lookup_scores(lookup: pd.DataFrame, ids: pd.Series, ref: str, id_col: str) -> np.ndarray:
    idx = lookup.index.get_indexer(ids)
    missing = idx < 0
    if missing.any():
        raise ScoringError(f"model {ref}: predictions do not cover the dataset: {int(missing.sum())} of {len(ids)} "
                           f"row ids in this batch have no score, e.g. {id_col}={_show(ids.iloc[int(np.flatnonzero(missing)[0])])}")
    values = lookup.to_numpy(dtype="float64")[idx]
    return values[:, 0] if values.shape[1] == 1 else values



def predictions_for_ids(registry: Registry, manifest: ModelManifest, spec: EvalSpec, ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A predictions-flavor model's scores for a few ids (a drift window's sample), in bounded memory: the artifact
    is copied out of the lake while its sha256 is checked, then streamed once keeping only the rows of ``ids``.
    Returns (scores in ``ids`` order: 1-D for one score column, else 2-D; NaN where missing, found mask).
    Memory grows with ``len(ids)``, not with the file. Duplicates are refused among the wanted ids only."""
    import pyarrow.compute as pc

    from . import external_join as xj

    cols = score_columns(spec)
    file_id = manifest.id_column or spec.columns.id
    score_cols = manifest.score_columns or cols
    with xj.new_workdir() as tmp:
        local = _verified_copy(registry, manifest, tmp)
        try:
            pf = pq.ParquetFile(local, pre_buffer=False)
        except Exception as exc:  # noqa: BLE001
            raise ScoringError(f"model {manifest.ref}: predictions file is not readable parquet: {exc}") from None
        have = _frame_columns(pf)
        missing = [c for c in [file_id, *score_cols] if c not in have]
        if missing:
            raise ScoringError(f"model {manifest.ref}: predictions file lacks column(s) {missing} (has {have})")
        ktype = xj.key_type(pf.schema_arrow.field(file_id).type, pa.array(ids.to_numpy()).type)
        wanted = pa.array(ids.to_numpy())
        if ktype is not None:
            wanted = pc.cast(wanted, ktype, safe=False)
        parts = []
        for batch in pf.iter_batches(batch_size=xj.READ_ROWS, columns=[file_id, *score_cols]):
            keys = batch.column(0) if ktype is None else pc.cast(batch.column(0), ktype, safe=False)
            mask = pc.is_in(keys, value_set=wanted)
            if pc.any(mask).as_py():
                parts.append(batch.filter(mask).to_pandas())
    frame = (pd.concat(parts, ignore_index=True) if parts
             else pd.DataFrame({c: pd.Series(dtype="float64") for c in [file_id, *score_cols]}))
    lookup = _prediction_lookup(LoadedModel(manifest, predictions=frame), spec, cols)
    idx = lookup.index.get_indexer(ids)
    found = idx >= 0
    values = lookup.to_numpy(dtype="float64")[np.where(found, idx, 0)] if len(lookup) else np.full((len(ids), len(cols)), np.nan)
    values[~found] = np.nan
    return (values[:, 0] if values.shape[1] == 1 else values), found
