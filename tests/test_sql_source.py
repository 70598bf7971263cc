"""Warehouse sources (issue 11, item 3): a spec's ``data.sql`` query or table, read from a real PostgreSQL server.

A throwaway cluster (tests/pg_util.py) holds a ``toy_rows`` table: the toy task's 2,000 rows (tests/toy.py, region
'eu') plus 500 decoy rows (region 'us', other ids, labels that would wreck the AUC). The spec's query selects the 'eu'
rows; the connection URL, password included, is only in an environment variable. Through ``eval-pipeline evaluate``
(in-process Dagster, a persistent instance) the toy release must come out exactly as it does from landed files: PASS,
with AUCs equal to scikit-learn's on the same 2,000 rows (tests/fixtures/toy_expected.py). Then: a second refresh
with no new rows gives the same snapshot id and writes no part; the same rows read as a ``table`` (a view) give the
same id; a new row gives a new id; a bad query fails naming the spec key and the database error, and leaves the
previous snapshot in place; the password is in no lake file, no Dagster event and no output.
Skipped, with the reason, when PostgreSQL's server binaries are missing.
"""

import hashlib
import json
import math
import os

import pytest

from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.refresh import refresh_snapshot
from eval_pipeline.snapshot import DataError, load_snapshot, read_snapshot_table
from eval_pipeline.spec import parse_spec

from .fixtures.toy_expected import TOY_ROWS, assert_toy_release_pass
from .pg_util import INITDB, SKIP_REASON, pg_cluster
from .s3_util import toy_spec_dict
from .toy import fit_model, register_joblib, toy_frame

pytestmark = pytest.mark.skipif(not INITDB, reason=SKIP_REASON)

PASSWORD = "wh-PASSWORD-should-not-leak-%3b"
URL_ENV = "EVAL_TEST_WAREHOUSE_URL"
QUERY = "select id, ts, a, b, y, region from toy_rows where region = 'eu' and b like '%'"  # '%' reaches the server
BATCH = 300


@pytest.fixture(scope="module")
def warehouse():
    import psycopg2
    import psycopg2.extras

    with pg_cluster(PASSWORD, databases=["warehouse"]) as pg:
        conn = psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=PASSWORD,
                                dbname="warehouse")
        with conn, conn.cursor() as cur:
            cur.execute("create table toy_rows (id bigint, ts timestamptz, a double precision, b text, y integer, "
                        "region text)")
            frame = toy_frame(TOY_ROWS)
            rows = [(int(r.id), r.ts.to_pydatetime(), float(r.a), r.b, int(r.y), "eu") for r in frame.itertuples()]
            # decoys: other region, labels inverted; if they leaked into the snapshot the AUCs would not match
            rows += [(100_000 + int(r.id), r.ts.to_pydatetime(), float(r.a), r.b, 1 - int(r.y), "us")
                     for r in frame.head(500).itertuples()]
            psycopg2.extras.execute_values(cur, "insert into toy_rows values %s", rows)
            cur.execute("create view toy_eu as select id, ts, a, b, y from toy_rows where region = 'eu'")
        url = f"postgresql+psycopg2://{pg['user']}:{PASSWORD.replace('%', '%25')}@{pg['host']}:{pg['port']}/warehouse"
        yield {"conn": conn, "url": url, "frame": frame}
        conn.close()


@pytest.fixture
def wh_env(warehouse, monkeypatch):
    monkeypatch.setenv(URL_ENV, warehouse["url"])
    return warehouse


def sql_spec_dict(**sql) -> dict:
    return toy_spec_dict(data={"sql": {"url_env": URL_ENV, "batch_rows": BATCH, **(sql or {"query": QUERY})}})


def _seed_models(lake: Lake, frame) -> None:
    reg = Registry(lake)
    register_joblib(reg, "1", fit_model(frame))
    register_joblib(reg, "2", fit_model(frame, c=0.1))
    reg.set_champion("toy_model", "1", reason="seed")


def _evaluate(spec_path, lake, home, out, capsys) -> tuple[int, dict | None, str]:
    from eval_pipeline.cli import main

    before = os.environ.get("DAGSTER_HOME")
    capsys.readouterr()
    try:
        code = main(["evaluate", "--spec", spec_path, "--lake", lake.root, "--candidate", "toy_model@2",
                     "--output", str(out), "--dagster-home", str(home)])
    finally:  # the CLI sets DAGSTER_HOME process-wide
        os.environ.pop("DAGSTER_HOME", None) if before is None else os.environ.__setitem__("DAGSTER_HOME", before)
    captured = capsys.readouterr()
    return code, (json.loads(out.read_text()) if out.exists() else None), captured.out + captured.err


def _all_lake_text(lake: Lake) -> str:
    return "\n".join(lake.read_bytes(f["rel"]).decode("latin-1") for f in lake.find(""))


def test_sql_source_end_to_end_through_the_cli(wh_env, tmp_path, capsys):
    import yaml
    from sklearn.metrics import accuracy_score

    lake = Lake(str(tmp_path / "lake"))
    frame = wh_env["frame"]
    _seed_models(lake, frame)
    spec_path = str(tmp_path / "toy_sql.yaml")
    (tmp_path / "toy_sql.yaml").write_text(yaml.safe_dump(sql_spec_dict(), sort_keys=False))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    code, result, output = _evaluate(spec_path, lake, home, tmp_path / "result.json", capsys)
    # PASS, exit 0, one gate row roc_auc/overall on n = 2000 whose values equal scikit-learn's on the 'eu' rows
    assert_toy_release_pass(code, result)
    # a second metric: the candidate's overall accuracy (threshold 0.5) against scikit-learn on the same rows
    cand = fit_model(frame, c=0.1)
    expected_acc = accuracy_score(frame["y"], cand.predict_proba(frame[["a", "b"]])[:, 1] >= 0.5)
    (overall,) = [s for s in result["metrics"]["slices"] if s["slice"] == "overall"]
    assert overall["n"] == TOY_ROWS
    assert abs(overall["models"]["candidate"]["accuracy"]["value"] - expected_acc) < 1e-12

    snap = load_snapshot(lake, "toy")
    assert snap.snapshot_id == result["dataset"]["snapshot_id"]
    m = snap.manifest
    sql = m["sql"]
    assert m["rows"] == sql["rows"] == TOY_ROWS
    assert sql["query"] == QUERY and sql["url_env"] == URL_ENV and sql["table"] is None
    assert sql["query_sha256"] == hashlib.sha256(sql["statement"].encode()).hexdigest()
    assert QUERY in sql["statement"] and sql["statement"].endswith("ORDER BY ts, id, y, a, b")
    assert [p["rows"] for p in sql["parts"]] == [BATCH] * (TOY_ROWS // BATCH) + [TOY_ROWS % BATCH]
    for part in sql["parts"]:  # immutable, content-addressed parts: name = sha256 of the bytes
        data = lake.read_bytes(part["path"])
        assert hashlib.sha256(data).hexdigest() == part["sha256"] and part["path"].endswith(f"{part['sha256']}.parquet")
    assert [s["path"] for s in m["source_files"]] == [p["path"] for p in sql["parts"]]
    assert m["schema"] == {"id": "int64", "y": "int64", "ts": "timestamp[us, tz=UTC]", "a": "double", "b": "string"}

    # the snapshot holds exactly the toy rows (the decoys were filtered by the query)
    assert snap.part_paths == [p["path"] for p in sql["parts"]]  # the extract parts are the snapshot's parts
    data = read_snapshot_table(lake, snap).to_pandas().sort_values("id").reset_index(drop=True)
    assert data["id"].tolist() == frame["id"].tolist() and data["y"].tolist() == frame["y"].tolist()
    assert (data["ts"] == frame["ts"]).all() and (data["a"] == frame["a"]).all()

    # the password is nowhere: lake, CLI output, Dagster's event log and run configs
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    assert PASSWORD not in _all_lake_text(lake) and PASSWORD not in output
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs()
        assert {r.job_name for r in runs} == {"toy__refresh", "toy__evaluate"}
        text = "\n".join(repr(e) for r in runs for e in instance.all_logs(r.run_id))
        text += "\n".join(repr(r.run_config) for r in runs)
    assert PASSWORD not in text and wh_env["url"] not in text


def test_refresh_is_content_addressed_and_a_bad_query_keeps_the_previous_snapshot(wh_env, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    spec = parse_spec(sql_spec_dict(), "toy_sql")
    first = refresh_snapshot(lake, spec)
    parts_before = {f["rel"]: f.get("mtime") for f in lake.find("extracts/toy/parts")}
    assert len(parts_before) == math.ceil(TOY_ROWS / BATCH)

    # unchanged warehouse rows: same snapshot id, no part rewritten, manifest re-used
    again = refresh_snapshot(lake, spec)
    assert again.snapshot_id == first.snapshot_id and again.manifest == first.manifest
    assert {f["rel"]: f.get("mtime") for f in lake.find("extracts/toy/parts")} == parts_before

    # the same rows as a table (a view) are the same content: the same snapshot id
    view = refresh_snapshot(lake, parse_spec(sql_spec_dict(table="toy_eu"), "toy_sql_table"))
    assert view.snapshot_id == first.snapshot_id

    # a bad query: DataError naming the spec key and the database's message; the previous snapshot stays
    latest = lake.read_bytes("snapshots/toy/latest.json")
    kept = {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find(f"snapshots/toy/{first.snapshot_id}")}
    with pytest.raises(DataError) as err:
        refresh_snapshot(lake, parse_spec(sql_spec_dict(query="select id, ts, a, b, y from toy_rowz"), "bad"))
    msg = str(err.value)
    assert "data.sql.query" in msg and 'relation "toy_rowz" does not exist' in msg and URL_ENV in msg, msg
    assert PASSWORD not in msg
    with pytest.raises(DataError, match=r"data\.sql\.query .*column \"nope\" does not exist"):
        refresh_snapshot(lake, parse_spec(sql_spec_dict(query="select id, ts, a, b, nope as y from toy_rows"), "b"))
    with pytest.raises(DataError, match=r"data\.sql\.table .*relation \"missing_table\" does not exist"):
        refresh_snapshot(lake, parse_spec(sql_spec_dict(table="missing_table"), "bad table"))
    assert lake.read_bytes("snapshots/toy/latest.json") == latest
    assert {f["rel"]: lake.read_bytes(f["rel"]) for f in lake.find(f"snapshots/toy/{first.snapshot_id}")} == kept

    # a new row in the warehouse: a new snapshot with one more row
    conn = wh_env["conn"]
    with conn, conn.cursor() as cur:
        cur.execute("insert into toy_rows values (99999, '2024-03-01T00:00:00Z', 0.5, 'x', 1, 'eu')")
    try:
        grown = refresh_snapshot(lake, spec)
        assert grown.snapshot_id != first.snapshot_id and grown.manifest["rows"] == TOY_ROWS + 1
        # only the last part changed: the first six are the same files
        assert [p["sha256"] for p in grown.manifest["sql"]["parts"][:-1]] == \
            [p["sha256"] for p in first.manifest["sql"]["parts"][:-1]]
    finally:
        with conn, conn.cursor() as cur:
            cur.execute("delete from toy_rows where id = 99999")
    assert refresh_snapshot(lake, spec).snapshot_id == first.snapshot_id


def test_bad_query_through_the_cli_names_the_key_and_the_database_error(wh_env, tmp_path, capsys):
    import yaml

    lake = Lake(str(tmp_path / "lake"))
    _seed_models(lake, wh_env["frame"])
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(sql_spec_dict(), sort_keys=False))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sql_spec_dict(query="select id, ts, a, b, y from toy_rowz"), sort_keys=False))
    first = refresh_snapshot(lake, parse_spec(yaml.safe_load(good.read_text()), "good"))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    code, result, output = _evaluate(str(bad), lake, home, tmp_path / "result.json", capsys)
    assert code == 2 and result is None
    assert "data.sql.query" in output and 'relation "toy_rowz" does not exist' in output, output[-2000:]
    assert PASSWORD not in output
    assert load_snapshot(lake, "toy").snapshot_id == first.snapshot_id


def test_missing_url_variable_and_credentials_in_the_spec_are_refused(warehouse, tmp_path, monkeypatch):
    from eval_pipeline.spec import SpecError

    monkeypatch.delenv(URL_ENV, raising=False)
    with pytest.raises(DataError, match=rf"data\.sql\.url_env names {URL_ENV}, which is not set"):
        refresh_snapshot(Lake(str(tmp_path / "lake")), parse_spec(sql_spec_dict(), "toy_sql"))
    with pytest.raises(SpecError) as err:
        parse_spec(sql_spec_dict(url=warehouse["url"], query=QUERY), "leaky.yaml")
    assert "credentials never go in the spec" in str(err.value) and PASSWORD not in str(err.value)
    with pytest.raises(SpecError, match="give either source"):
        parse_spec(toy_spec_dict(data={"source": "incoming/toy", "sql": {"url_env": URL_ENV, "table": "t"}}), "x")
    # a spec still needs a data source: the usual message
    with pytest.raises(SpecError, match="data.source: required key is missing"):
        parse_spec(toy_spec_dict(data={}), "x")


def test_register_before_and_after_the_first_refresh_and_the_spec_round_trips(wh_env, tmp_path, capsys):
    """`eval-pipeline register --spec` works for a SQL task before any refresh (loaded, not scored: nothing to score
    yet) and scores snapshot rows after one; the spec saved beside results re-parses to the same spec."""
    import yaml

    from eval_pipeline.cli import main
    from eval_pipeline.spec import spec_text_from
    from eval_pipeline.sql_source import parts_prefix

    from .toy import joblib_bytes

    lake = Lake(str(tmp_path / "lake"))
    spec_path = tmp_path / "toy_sql.yaml"
    spec_path.write_text(yaml.safe_dump(sql_spec_dict(), sort_keys=False))
    spec = parse_spec(yaml.safe_load(spec_path.read_text()), str(spec_path))
    assert spec.data.source == parts_prefix("toy")  # the SQL task's landing area, named in messages
    dumped = yaml.safe_load(spec_text_from(spec))
    assert "source" not in dumped["data"] and parse_spec(dumped, "saved") == spec

    artifact = tmp_path / "model.joblib"
    artifact.write_bytes(joblib_bytes(fit_model(wh_env["frame"])))
    args = ["register", "--lake", lake.root, "--name", "toy_model", "--flavor", "sklearn-joblib",
            "--artifact", str(artifact), "--spec", str(spec_path)]
    capsys.readouterr()
    assert main(args + ["--version", "1"]) == 0
    out = capsys.readouterr()
    assert "was loaded but not scored" in out.out + out.err
    refresh_snapshot(lake, spec)
    assert main(args + ["--version", "2"]) == 0
    out = capsys.readouterr()
    assert "scored 20 rows" in out.out + out.err, out
