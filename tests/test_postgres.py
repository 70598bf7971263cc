"""Dagster instance storage on PostgreSQL (dagster-postgres), as docs/postgres.md describes for a shared deployment.

A throwaway PostgreSQL cluster (Debian's ``postgresql`` package: ``initdb`` / ``pg_ctl``, run as the ``postgres``
user when the tests run as root) listens on 127.0.0.1 and a free port with password authentication; ``dagster.yaml``
points runs, events and schedules at it with ``scheme: postgresql+psycopg2`` and the password from an environment
variable. One in-process evaluation (refresh + blocking data-quality check, then score → gates → report with the
gates check) runs on that instance; its runs, check evaluations and materializations are read back from
PostgreSQL, and the password appears in none of them. Skipped, with the reason, when ``initdb`` is not installed
(``apt-get install -y postgresql``).
"""

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from eval_pipeline.cli import run_evaluation
from eval_pipeline.lake import Lake

from .fixtures.toy_expected import assert_toy_release_pass
from .pg_util import INITDB, SKIP_REASON, pg_cluster
from .s3_util import seed_toy, write_spec

PASSWORD = "pg-PASSWORD-should-not-leak-7f3a"
DAGSTER_YAML = """\
storage:
  postgres:
    postgres_db:
      username: dagster
      password:
        env: EVAL_TEST_PG_PASSWORD
      hostname: 127.0.0.1
      port: {port}
      db_name: dagster
      scheme: postgresql+psycopg2
telemetry:
  enabled: false
"""

pytestmark = pytest.mark.skipif(not INITDB, reason=SKIP_REASON)


@pytest.fixture(scope="module")
def postgres():
    with pg_cluster(PASSWORD, databases=["dagster"]) as pg:  # tests/pg_util.py
        yield pg


def test_evaluation_with_dagster_storage_on_postgres(postgres, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML.format(port=postgres["port"]))
    monkeypatch.setenv("EVAL_TEST_PG_PASSWORD", PASSWORD)
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # run_evaluation sets it process-wide; restore it afterwards
    lake = Lake(str(tmp_path / "lake"))
    seed_toy(lake)

    code, result = run_evaluation(write_spec(tmp_path / "toy.yaml"), lake.root, "toy_model@2", str(home), None)
    assert_toy_release_pass(code, result)  # PASS on roc_auc/overall, exit 0: see tests/fixtures/toy_expected.py

    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == ["toy__evaluate", "toy__refresh"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        checks = instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION))
        outcomes = {r.event_log_entry.dagster_event.event_specific_data.check_name:
                    r.event_log_entry.dagster_event.event_specific_data.passed for r in checks}
        assert outcomes == {"data_quality": True, "gates_pass": True}  # the toy candidate PASSes
        mats = instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION))
        assert {"dataset_snapshot", "predictions", "evaluation", "release_gates", "decision_report"} <= {
            r.asset_key.path[-1] for r in mats}
        text = "\n".join(repr(e) for r in runs for e in instance.all_logs(r.run_id))
        text += "\n".join(repr(r.run_config) for r in runs)
        assert PASSWORD not in text
    # nothing but dagster.yaml (which names the variable, not the password) is kept in DAGSTER_HOME for storage
    assert not list(home.rglob("*.db"))
    assert PASSWORD not in (home / "dagster.yaml").read_text()
