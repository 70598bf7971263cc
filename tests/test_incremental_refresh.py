"""Incremental refresh (issue 11): a snapshot is a manifest of immutable parts, one per landed file.

Landing a file reads only that file; unchanged files are recognised by (path, size, mtime) and never re-read; a
changed file is re-hashed; a missing part is rebuilt; incompatible files are named. Every number is checked against
pandas / hashlib on the landed files themselves, locally and on S3 (moto's server).
"""

import hashlib
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from eval_pipeline.lake import Lake
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.snapshot import DataError, eval_rows, iter_rows, load_snapshot, read_snapshot_table

from .s3_util import moto_endpoint, s3_env, s3_lake  # noqa: F401
from .toy import manifest_content, toy_frame, toy_spec

SOURCE = "incoming/toy"
COLUMNS = ["id", "y", "ts", "a", "b"]


class CountingLake(Lake):
    """A lake that records every lake path it is asked to touch (reads, hashes, stats all go through ``path``)."""

    touched: list[str]

    def path(self, rel: str) -> str:
        self.__dict__.setdefault("touched", []).append(rel)
        return super().path(rel)

    def reset(self) -> None:
        self.touched = []


def batch(i: int, n: int = 400) -> pd.DataFrame:
    """The i-th delivery: its own ids and its own later time range, rows shuffled (parts sort them)."""
    frame = toy_frame(n, seed=10 + i)
    frame = frame.assign(id=frame["id"] + 10_000 * i, ts=frame["ts"] + pd.Timedelta(days=30 * i))
    return frame.sample(frac=1.0, random_state=i).reset_index(drop=True)


def deliver(lake: Lake, i: int, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    frame = batch(i) if frame is None else frame
    lake.write_parquet(f"{SOURCE}/part-{i}.parquet", frame)
    return frame


def expected_id(lake: Lake, rels: list[str]) -> str:
    """The snapshot id from first principles: sha256 over (path, sha256 of the file's bytes) in path order, then the
    spec's columns."""
    h = hashlib.sha256()
    for rel in sorted(rels):
        h.update(f"{rel}\0{hashlib.sha256(lake.read_bytes(rel)).hexdigest()}\n".encode())
    h.update("\0".join(COLUMNS).encode())
    return h.hexdigest()[:16]


def check_snapshot(lake: Lake, snap, frames: dict[str, pd.DataFrame]) -> None:
    """Rows, time range, id, schema and part hashes of a snapshot against the landed frames (pandas, hashlib)."""
    allrows = pd.concat(frames.values(), ignore_index=True)
    m = snap.manifest
    assert snap.snapshot_id == expected_id(lake, list(frames))
    assert m["rows"] == len(allrows) == sum(p["rows"] for p in m["parts"])
    assert [pd.Timestamp(t) for t in m["time_range"]] == [allrows["ts"].min(), allrows["ts"].max()]
    assert [p["source"]["path"] for p in m["parts"]] == sorted(frames)
    assert m["schema"] == {"id": "int64", "y": "int64", "ts": "timestamp[us, tz=UTC]", "a": "double", "b": "string"}
    part_hashes = [hashlib.sha256(lake.read_bytes(p["path"])).hexdigest() for p in m["parts"]]
    assert part_hashes == [p["sha256"] for p in m["parts"]]
    assert m["data_sha256"] == hashlib.sha256("".join(f"{h}\n" for h in part_hashes).encode()).hexdigest()
    for p in m["parts"]:  # each part: its file's rows, sorted by (ts, id)
        want = frames[p["source"]["path"]].sort_values(["ts", "id"]).reset_index(drop=True)
        got = lake.read_parquet(p["path"])
        pd.testing.assert_frame_equal(got[COLUMNS], want[COLUMNS], check_dtype=False)
    data = read_snapshot_table(lake, snap).to_pandas().sort_values("id").reset_index(drop=True)
    want = allrows.sort_values("id").reset_index(drop=True)
    pd.testing.assert_frame_equal(data[COLUMNS], want[COLUMNS], check_dtype=False)


def landed(lake: Lake) -> set[str]:
    return {f["rel"] for f in lake.find(SOURCE)}


@pytest.fixture(params=["local", "s3"])
def lake(request, tmp_path):
    if request.param == "local":
        return CountingLake(str(tmp_path / "lake"))
    request.getfixturevalue("s3_env")
    from .s3_util import bucket_name, create_bucket

    bucket = bucket_name(request)
    create_bucket(os.environ["EVAL_S3_ENDPOINT_URL"], bucket)
    return CountingLake(f"s3://{bucket}/lake")


def test_landing_a_new_file_reads_only_that_file(lake):
    spec = toy_spec()
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i) for i in range(3)}
    first = refresh_snapshot(lake, spec)
    check_snapshot(lake, first, frames)
    old = landed(lake)

    frames[f"{SOURCE}/part-3.parquet"] = deliver(lake, 3)
    lake.reset()
    second = refresh_snapshot(lake, spec)
    assert not old & set(lake.touched), f"old files were read: {sorted(old & set(lake.touched))}"
    assert not set(first.part_paths) & set(lake.touched)  # nor their parts (not even a footer)
    assert f"{SOURCE}/part-3.parquet" in lake.touched  # the new one was
    check_snapshot(lake, second, frames)
    assert second.snapshot_id != first.snapshot_id
    assert second.manifest["parts"][:3] == first.manifest["parts"]  # the same parts, re-used as they were


def test_nothing_new_reuses_everything_byte_for_byte_and_reads_no_landed_file(lake):
    spec = toy_spec()
    for i in range(3):
        deliver(lake, i)
    first = refresh_snapshot(lake, spec)
    before = {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find("snapshots")}
    lake.reset()
    again = refresh_snapshot(lake, spec)
    assert not landed(lake) & set(lake.touched)
    assert again.snapshot_id == first.snapshot_id and again.manifest == first.manifest
    assert {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find("snapshots")} == before


def test_a_changed_file_is_rehashed_and_the_others_are_not(lake):
    spec = toy_spec()
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i) for i in range(3)}
    first = refresh_snapshot(lake, spec)
    frames[f"{SOURCE}/part-1.parquet"] = deliver(lake, 1, batch(1, n=250))  # a corrected delivery: new size
    lake.reset()
    changed = refresh_snapshot(lake, spec)
    touched = set(lake.touched)
    assert f"{SOURCE}/part-1.parquet" in touched
    assert not {f"{SOURCE}/part-0.parquet", f"{SOURCE}/part-2.parquet"} & touched
    check_snapshot(lake, changed, frames)
    assert changed.snapshot_id != first.snapshot_id
    assert changed.manifest["parts"][1]["source"]["sha256"] != first.manifest["parts"][1]["source"]["sha256"]


def test_a_touched_file_with_the_same_size_is_rehashed(tmp_path):
    lake = CountingLake(str(tmp_path / "lake"))
    spec = toy_spec()
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i) for i in range(2)}
    first = refresh_snapshot(lake, spec)
    path = lake.path(f"{SOURCE}/part-0.parquet")
    os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 60))  # same bytes, new mtime
    lake.reset()
    again = refresh_snapshot(lake, spec)
    assert f"{SOURCE}/part-0.parquet" in lake.touched and f"{SOURCE}/part-1.parquet" not in lake.touched
    assert again.snapshot_id == first.snapshot_id  # same content, same snapshot
    assert again.manifest["parts"][0]["source"]["mtime"] == os.stat(path).st_mtime
    check_snapshot(lake, again, frames)


def test_a_missing_or_damaged_part_is_rebuilt_from_its_file_only(lake):
    spec = toy_spec()
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i) for i in range(3)}
    first = refresh_snapshot(lake, spec)
    parts = first.part_paths
    good = {p: lake.read_bytes(p) for p in parts}
    lake.delete(parts[0])
    lake.write_bytes(parts[2], good[parts[2]][:-10])  # truncated: a different size
    lake.reset()
    again = refresh_snapshot(lake, spec)
    touched = set(lake.touched)
    assert {f"{SOURCE}/part-0.parquet", f"{SOURCE}/part-2.parquet"} <= touched
    assert f"{SOURCE}/part-1.parquet" not in touched
    assert again.snapshot_id == first.snapshot_id and manifest_content(again.manifest) == manifest_content(first.manifest)
    assert {p: lake.read_bytes(p) for p in parts} == good
    check_snapshot(lake, again, frames)


def test_a_part_changed_in_place_at_the_same_size_is_rebuilt(lake):
    spec = toy_spec()
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i) for i in range(3)}
    first = refresh_snapshot(lake, spec)
    part = first.part_paths[1]
    good = lake.read_bytes(part)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one byte flipped: same size, new mtime
    lake.write_bytes(part, bytes(bad))
    lake.reset()
    again = refresh_snapshot(lake, spec)
    assert f"{SOURCE}/part-1.parquet" in set(lake.touched)  # rebuilt from its landed file
    assert lake.read_bytes(part) == good and again.snapshot_id == first.snapshot_id
    check_snapshot(lake, again, frames)
    lake.reset()
    refresh_snapshot(lake, spec)  # intact now, with its new write stamp: nothing is read
    assert not [p for p in lake.touched if p.startswith(SOURCE) and p.endswith(".parquet")]


def test_incompatible_types_name_both_files_and_keep_the_previous_snapshot(lake):
    spec = toy_spec()
    for i in range(2):
        deliver(lake, i)
    first = refresh_snapshot(lake, spec)
    deliver(lake, 2, batch(2).assign(a=lambda d: d["a"].round(2).astype(str)))
    with pytest.raises(DataError, match=r"incompatible column types: .*part-2\.parquet: column 'a' is string, but "
                                        r".*part-0\.parquet has double"):
        refresh_snapshot(lake, spec)
    assert load_snapshot(lake, "toy").snapshot_id == first.snapshot_id


def test_compatible_types_are_unified_when_read(tmp_path):
    """An integer column in one file and floats in another read as double, as one concatenated table would."""
    lake = Lake(str(tmp_path / "lake"))
    spec = toy_spec()
    frames = {f"{SOURCE}/part-0.parquet": deliver(lake, 0)}
    ints = batch(1).assign(a=lambda d: (d["a"] * 10).round().astype("int64"))
    frames[f"{SOURCE}/part-1.parquet"] = deliver(lake, 1, ints)
    snap = refresh_snapshot(lake, spec)
    assert [p["schema"]["a"] for p in snap.parts] == ["double", "int64"]
    for batch_ in iter_rows(lake, snap, ["id", "a"]):
        assert str(batch_.schema.field("a").type) == "double"
    check_snapshot(lake, snap, frames)


def test_parts_and_windows_select_rows(tmp_path):
    lake = CountingLake(str(tmp_path / "lake"))
    frames = [deliver(lake, i) for i in range(3)]
    start = frames[1]["ts"].min() + pd.Timedelta(days=2)
    spec = toy_spec(data={"source": SOURCE, "evaluation_start": start.isoformat()})
    snap = refresh_snapshot(lake, spec)
    only = pd.concat([b.to_pandas() for b in iter_rows(lake, snap, ["id"], parts=[2, 0])])
    assert only["id"].tolist() == pd.concat([frames[2].sort_values(["ts", "id"]),
                                             frames[0].sort_values(["ts", "id"])])["id"].tolist()
    lake.reset()
    got = pd.concat([b.to_pandas() for b in eval_rows(lake, snap, spec, ["id"])])
    allrows = pd.concat(frames)
    assert sorted(got["id"]) == sorted(allrows.loc[allrows["ts"] >= start, "id"])
    assert snap.part_paths[0] not in lake.touched  # wholly before the window: skipped unread
    assert set(snap.part_paths[1:]) <= set(lake.touched)


def test_a_file_larger_than_the_sort_budget_is_streamed_and_sorted_per_row_group(tmp_path, monkeypatch):
    from eval_pipeline import snapshot_parts

    lake = Lake(str(tmp_path / "lake"))
    spec = toy_spec()
    frames = {f"{SOURCE}/part-0.parquet": deliver(lake, 0, batch(0, n=1000))}
    sorted_whole = refresh_snapshot(lake, spec)
    handed = []
    real = snapshot_parts.normalise_types
    monkeypatch.setattr(snapshot_parts, "normalise_types", lambda t, *a, **k: handed.append(t.num_rows) or real(t, *a, **k))
    monkeypatch.setenv("EVAL_SNAPSHOT_SORT_MAX_BYTES", "0")
    monkeypatch.setattr(snapshot_parts, "STREAM_BATCH_ROWS", 300)
    lake.delete(sorted_whole.part_paths[0])  # or the previous part would simply be re-used
    streamed = refresh_snapshot(lake, spec)
    assert max(handed) <= 300 and sum(handed) == 1000  # never more than one batch in hand
    [part] = streamed.parts
    assert part["order"] == "row_groups" and part["path"] != sorted_whole.part_paths[0]
    assert streamed.snapshot_id == sorted_whole.snapshot_id  # same files: same snapshot
    pf = pq.ParquetFile(lake.path(part["path"]))
    assert pf.metadata.num_row_groups == 4
    frame = frames[f"{SOURCE}/part-0.parquet"]
    for g in range(4):  # each row group: its 300 source rows, sorted
        got = pf.read_row_group(g).to_pandas()
        want = frame.iloc[g * 300:(g + 1) * 300].sort_values(["ts", "id"])
        assert got["id"].tolist() == want["id"].tolist()
    assert sorted(read_snapshot_table(lake, streamed)["id"].to_pylist()) == sorted(frame["id"])
    assert streamed.manifest["rows"] == 1000 and streamed.manifest["time_range"] == sorted_whole.manifest["time_range"]


@pytest.mark.parametrize("budget", [None, "0"])
def test_csv_files_become_parts_whole_or_streamed(tmp_path, monkeypatch, budget):
    if budget is not None:
        monkeypatch.setenv("EVAL_SNAPSHOT_SORT_MAX_BYTES", budget)
    lake = Lake(str(tmp_path / "lake"))
    frame = batch(0, n=300)
    text = frame.assign(ts=frame["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(index=False)
    lake.write_text(f"{SOURCE}/part-0.csv", text)
    frames = {f"{SOURCE}/part-0.csv": frame}
    snap = refresh_snapshot(lake, toy_spec())
    assert snap.parts[0]["order"] == ("part" if budget is None else "row_groups")
    np.testing.assert_array_equal(read_snapshot_table(lake, snap, ["id"])["id"].to_numpy(),
                                  frame.sort_values(["ts", "id"])["id"].to_numpy())
    check_snapshot(lake, snap, frames)


def test_a_spec_with_other_columns_does_not_reuse_parts(tmp_path):
    lake = CountingLake(str(tmp_path / "lake"))
    frames = {f"{SOURCE}/part-{i}.parquet": deliver(lake, i).assign(extra=float(i)) for i in range(2)}
    for rel, frame in frames.items():
        lake.write_parquet(rel, frame)
    first = refresh_snapshot(lake, toy_spec())
    wider = toy_spec(slices={"columns": ["b", "extra"], "min_size": 50})
    lake.reset()
    snap = refresh_snapshot(lake, wider)
    assert set(frames) <= set(lake.touched)  # both files read again: the old parts lack 'extra'
    assert snap.snapshot_id != first.snapshot_id and not set(snap.part_paths) & set(first.part_paths)
    got = read_snapshot_table(lake, snap, ["id", "extra"]).to_pandas().sort_values("id")
    want = pd.concat(frames.values()).sort_values("id")
    assert got["extra"].tolist() == want["extra"].tolist()
    with pytest.raises(DataError, match=r"part-0\.parquet: missing column\(s\) \['carrier'\] required by spec"):
        refresh_snapshot(lake, toy_spec(slices={"columns": ["carrier"], "min_size": 50}))


def test_a_file_replaced_while_it_is_read_is_refused_and_leaves_no_part(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    spec = toy_spec()
    deliver(lake, 0)
    first = refresh_snapshot(lake, spec)
    deliver(lake, 1)
    real = Lake.sha256

    def hash_then_replace(self, rel):
        out = real(self, rel)
        if rel.endswith("part-1.parquet"):  # an upload overwriting the file right after it was hashed
            self.write_parquet(rel, batch(1, n=123))
        return out

    monkeypatch.setattr(Lake, "sha256", hash_then_replace)
    before = {f["rel"] for f in lake.find("snapshots")}
    with pytest.raises(DataError, match=r"part-1\.parquet: the file changed while it was being read"):
        refresh_snapshot(lake, spec)
    assert {f["rel"] for f in lake.find("snapshots")} == before  # no part, no manifest
    assert load_snapshot(lake, "toy").snapshot_id == first.snapshot_id


def test_s3_object_replaced_within_the_same_second_is_caught_by_its_etag(request):
    """S3's LastModified has one-second resolution: a same-size object replaced within that second lists with the
    same (size, mtime), but not the same ETag."""
    request.getfixturevalue("s3_env")
    from .s3_util import bucket_name, create_bucket

    bucket = bucket_name(request)
    create_bucket(os.environ["EVAL_S3_ENDPOINT_URL"], bucket)
    lake = CountingLake(f"s3://{bucket}/lake")
    frame = batch(0, n=200)
    text = frame.to_csv(index=False)
    lake.write_text(f"{SOURCE}/part-0.csv", text)
    first = refresh_snapshot(lake, toy_spec())
    old_mtime = lake.info(f"{SOURCE}/part-0.csv")["mtime"]
    fixed = frame.assign(y=1 - frame["y"])  # same length of text: labels flipped
    assert len(fixed.to_csv(index=False)) == len(text)
    lake.write_text(f"{SOURCE}/part-0.csv", fixed.to_csv(index=False))
    # as if the replacement had landed within the same second: S3 would list the same size and LastModified
    real_find, real_info = lake.find, lake.info
    lake.find = lambda rel: [{**f, "mtime": old_mtime} for f in real_find(rel)]
    lake.info = lambda rel: {**real_info(rel), "mtime": old_mtime}
    assert [f["size"] for f in lake.find(SOURCE)] == [first.parts[0]["source"]["size"]]
    lake.reset()
    again = refresh_snapshot(lake, toy_spec())
    assert f"{SOURCE}/part-0.csv" in lake.touched  # re-read: the ETag differed
    assert again.snapshot_id != first.snapshot_id
    got = read_snapshot_table(lake, again, ["id", "y"]).to_pandas().sort_values("id")
    assert got["y"].tolist() == fixed.sort_values("id")["y"].tolist()
