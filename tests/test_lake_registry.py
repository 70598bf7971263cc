"""Lake (atomic writes, path safety) and registry (pinned hashes, manifests, champion, audit)."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from eval_pipeline.lake import Lake, LakeError
from eval_pipeline.registry import Registry, RegistryError, parse_ref, version_sort_key


def test_atomic_write_keeps_old_file_when_the_writer_fails(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_text("reports/r.txt", "good")
    with pytest.raises(RuntimeError):
        with lake.atomic_open("reports/r.txt") as fh:
            fh.write(b"half")
            raise RuntimeError("crash mid-write")
    assert lake.read_text("reports/r.txt") == "good"
    assert [p.name for p in (tmp_path / "reports").iterdir()] == ["r.txt"]  # no temp file left behind


def test_process_killed_mid_write_leaves_previous_output_readable(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_text("out/data.bin", "previous good output")
    script = textwrap.dedent(f"""
        import time
        from eval_pipeline.lake import Lake
        lake = Lake({str(tmp_path)!r})
        with lake.atomic_open("out/data.bin") as fh:
            fh.write(b"x" * 1_000_000)
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert lake.read_text("out/data.bin") == "previous good output"
    assert lake.ls("out") == ["out/data.bin"]  # the orphaned temp file is hidden from readers


@pytest.mark.parametrize("bad", ["../escape", "a/../../b", "/etc/passwd", "s3://other/bucket"])
def test_paths_cannot_escape_the_lake(tmp_path, bad):
    with pytest.raises(LakeError, match="lake"):
        Lake(str(tmp_path)).write_text(bad, "x")


def test_json_is_canonical_and_refuses_nan(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_json("a.json", {"b": 1, "a": [1.5, None]})
    assert lake.read_text("a.json") == '{\n  "a": [\n    1.5,\n    null\n  ],\n  "b": 1\n}\n'
    with pytest.raises(ValueError):
        lake.write_json("b.json", {"x": float("nan")})
    assert not lake.exists("b.json")


def _register(reg, version="1", data=b"model-bytes", **kw):
    return reg.register("m", version, data, flavor="sklearn-joblib", artifact_name="model.joblib", **kw)


def test_register_pins_sha_and_writes_manifest_last(tmp_path):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    m = _register(reg)
    import hashlib

    assert m.sha256 == hashlib.sha256(b"model-bytes").hexdigest()
    assert reg.verified_artifact(m) == b"model-bytes"
    assert reg.versions("m") == ["1"]
    with pytest.raises(RegistryError, match="already registered"):
        _register(reg)


def test_tampered_artifact_is_refused(tmp_path):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    m = _register(reg)
    lake.write_bytes("registry/m/1/model.joblib", b"evil pickle")
    with pytest.raises(RegistryError, match=r"m@1.*sha256.*refusing"):
        reg.verified_artifact(reg.manifest("m", "1"))


def test_half_written_version_is_incomplete(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_bytes("registry/m/7/model.joblib", b"x")
    reg = Registry(lake)
    assert reg.scan("m") == [{"name": "m", "version": "7", "complete": False}]
    assert reg.versions("m") == []


def test_manifest_with_missing_fields_names_them(tmp_path):
    lake = Lake(str(tmp_path))
    lake.write_json("registry/m/2/manifest.json", {"name": "m", "version": "2", "flavor": "sklearn-joblib"})
    with pytest.raises(RegistryError) as err:
        Registry(lake).manifest("m", "2")
    msg = str(err.value)
    assert "m@2" in msg and "artifact" in msg and "sha256" in msg and "required field is missing" in msg


def test_manifest_that_disagrees_with_its_folder_is_refused(tmp_path):
    lake = Lake(str(tmp_path))
    reg = Registry(lake)
    m = _register(reg)
    lake.write_json("registry/m/9/manifest.json", m.model_dump(mode="json"))
    with pytest.raises(RegistryError, match="folder and the manifest must agree"):
        reg.manifest("m", "9")


@pytest.mark.parametrize("name,version", [("..", "1"), ("m", ".."), ("m", "../../etc"), ("/abs", "1"), ("m", "a/b")])
def test_names_that_escape_the_registry_are_refused(tmp_path, name, version):
    reg = Registry(Lake(str(tmp_path)))
    with pytest.raises(RegistryError, match="not allowed"):
        reg.register(name, version, b"x", flavor="sklearn-joblib", artifact_name="model.joblib")
    with pytest.raises(RegistryError):
        parse_ref(f"{name}@{version}")


def test_champion_and_promotion_audit(tmp_path):
    reg = Registry(Lake(str(tmp_path)))
    _register(reg, "1")
    _register(reg, "2", data=b"other")
    assert reg.champion("m") is None
    reg.set_champion("m", "1", reason="initial")
    rec = reg.set_champion("m", "2", evidence={"gates": ["ok"]}, reason="passed")
    assert reg.champion("m") == "2"
    assert rec["previous"] == "1"
    audit = reg.promotions("m")
    assert [a["version"] for a in audit] == ["1", "2"] and audit[1]["evidence"] == {"gates": ["ok"]}


def test_versions_sort_naturally():
    assert sorted(["10", "2", "1", "v3"], key=version_sort_key) == ["1", "2", "10", "v3"]


# -- issue 11: S3 writes stream as a multipart upload; hashes stream --------------------------------------------------
from .s3_util import moto_endpoint, s3_env, s3_lake  # noqa: E402,F401

MiB = 2**20


def _s3_client(lake):
    import boto3

    from .s3_util import REGION

    return boto3.client("s3", endpoint_url=os.environ["EVAL_S3_ENDPOINT_URL"], region_name=REGION)


def _bucket_key(lake, rel):
    bucket, _, prefix = lake.root[len("s3://"):].partition("/")
    return bucket, f"{prefix}/{rel}"


def test_s3_write_streams_fixed_blocks_and_round_trips(s3_lake, monkeypatch):
    import hashlib

    import numpy as np

    monkeypatch.setenv("EVAL_S3_BLOCK_SIZE", str(5 * MiB))  # S3's smallest part
    client = _s3_client(s3_lake)
    bucket, key = _bucket_key(s3_lake, "big/object.bin")
    chunks = [np.random.default_rng(i).bytes(MiB) for i in range(22)]  # 22 MiB: four full blocks and a tail
    buffered, parts_seen = [], None
    with s3_lake.atomic_open("big/object.bin") as fh:
        for i, chunk in enumerate(chunks):
            fh.write(chunk)
            buffered.append(len(fh.buffer.getbuffer()))  # what the writer holds in memory right now
            if i == 16:  # mid-write: three blocks are already on S3 as parts, and nothing is visible yet
                [upload] = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
                parts_seen = len(client.list_parts(Bucket=bucket, Key=key, UploadId=upload["UploadId"])["Parts"])
                assert "Contents" not in client.list_objects_v2(Bucket=bucket, Prefix=key)
    assert parts_seen == 3
    assert max(buffered) < 5 * MiB + MiB  # never more than one block plus the write in hand, whatever the size
    data = b"".join(chunks)
    head = client.head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data) and head["ETag"].strip('"').endswith("-5")  # 4 blocks + tail
    assert s3_lake.read_bytes("big/object.bin") == data
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)
    assert s3_lake.sha256("big/object.bin") == (hashlib.sha256(data).hexdigest(), len(data))


def test_s3_write_that_fails_midway_leaves_the_previous_object(s3_lake, monkeypatch):
    import numpy as np

    monkeypatch.setenv("EVAL_S3_BLOCK_SIZE", str(5 * MiB))
    client = _s3_client(s3_lake)
    bucket, key = _bucket_key(s3_lake, "out/data.bin")
    s3_lake.write_bytes("out/data.bin", b"previous good output")
    with pytest.raises(RuntimeError, match="crash mid-write"):
        with s3_lake.atomic_open("out/data.bin") as fh:
            for i in range(16):  # three blocks already uploaded as parts
                fh.write(np.random.default_rng(i).bytes(MiB))
            raise RuntimeError("crash mid-write")
    assert s3_lake.read_bytes("out/data.bin") == b"previous good output"
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)  # the upload was aborted, parts deleted
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [key]


def test_s3_block_size_below_the_s3_minimum_is_refused(s3_lake, monkeypatch):
    monkeypatch.setenv("EVAL_S3_BLOCK_SIZE", "1000")
    with pytest.raises(LakeError, match=r"EVAL_S3_BLOCK_SIZE=1000 is below S3's smallest multipart part"):
        s3_lake.write_bytes("x.bin", b"x")
    assert not s3_lake.exists("x.bin")


def test_sha256_reads_in_chunks_not_whole(tmp_path, monkeypatch):
    import hashlib

    import eval_pipeline.lake as lake_module

    lake = Lake(str(tmp_path))
    data = bytes(range(256)) * 400  # 102,400 bytes
    lake.write_bytes("f.bin", data)
    reads = []
    real_open = lake.fs.open

    def counting_open(*args, **kwargs):
        fh = real_open(*args, **kwargs)
        real_read = fh.read
        fh.read = lambda n=-1: reads.append(n) or real_read(n)
        return fh

    monkeypatch.setattr(lake_module, "HASH_CHUNK", 4096)
    monkeypatch.setattr(lake.fs, "open", counting_open)
    monkeypatch.setattr(Lake, "read_bytes", lambda *a: pytest.fail("sha256 read the whole file"))
    assert lake.sha256("f.bin") == (hashlib.sha256(data).hexdigest(), len(data))
    assert reads and all(0 < n <= 4096 for n in reads)
    with pytest.raises(FileNotFoundError, match="not found in the lake"):
        lake.sha256("missing.bin")


def test_s3_lake_sees_objects_another_process_wrote_after_it_listed_the_folder(s3_lake):
    """Two processes share a lake: one lists a folder, the other adds an object to it, the first reads that object.
    (s3fs caches listings per filesystem instance; a cached listing would call the new object missing.)"""
    other = Lake(s3_lake.root)  # another process's lake: its own S3 filesystem instance
    s3_lake.write_bytes("shared/a.bin", b"a")
    assert [f["rel"] for f in s3_lake.find("shared")] == ["shared/a.bin"]
    assert s3_lake.ls("shared") == ["shared/a.bin"]
    other.write_bytes("shared/b.bin", b"b")
    assert s3_lake.read_bytes("shared/b.bin") == b"b"
    assert s3_lake.exists("shared/b.bin") and s3_lake.info("shared/b.bin")["size"] == 1
    with s3_lake.open("shared/b.bin") as fh:
        assert fh.read() == b"b"
    assert [f["rel"] for f in s3_lake.find("shared")] == ["shared/a.bin", "shared/b.bin"]
