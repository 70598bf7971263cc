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
