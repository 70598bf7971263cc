"""Promotion: opt-in, only on PASS, with an audit record; a compare-and-swap on the champion the candidate was
evaluated against; `promote --initial` names the first champion; every refusal exits 2 and says why."""

import numpy as np
import pytest
import skops.io as sio
import yaml
from sklearn.metrics import roc_auc_score

import dagster as dg

from assets.automation import build_automation
from eval_pipeline.cli import main, run_evaluation
from eval_pipeline.definitions import build_definitions, task_jobs
from eval_pipeline.lake import Lake
from eval_pipeline.registry import Registry
from eval_pipeline.spec import load_spec
from resources import LakeResource, SettingsResource

from .toy import TOY_SPEC, fit_model, land, toy_frame


def register_skops(reg, version, model, name="toy_model"):
    # skops, not joblib: pickles are opt-in (EVAL_ALLOW_PICKLE) and these tests are not about them
    return reg.register(name, version, sio.dumps(model), flavor="sklearn-skops", artifact_name="model.skops")


@pytest.fixture
def toy_lake(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    reg = Registry(lake)
    frame = toy_frame(4000)
    land(lake, frame)
    register_skops(reg, "1", fit_model(frame.iloc[:300], c=0.001))  # weak champion
    reg.set_champion("toy_model", "1", reason="initial")
    register_skops(reg, "2", fit_model(frame.iloc[:2000]))          # clearly better candidate
    return lake, reg, tmp_path, frame


def _spec(tmp_path, gates, name="spec.yaml"):
    # drift off: Evidently is not what these tests are about, and it costs seconds per run
    spec = {**TOY_SPEC, "gates": gates, "evaluation": {"bootstrap_replicates": 400}, "drift": {"enabled": False}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


NON_INFERIOR = [{"metric": "roc_auc", "kind": "non_inferiority", "margin": 0.02}]


def _promotion_metadata(home, partition):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        ev = instance.get_latest_materialization_event(dg.AssetKey(["toy", "champion_promotion"]))
        if ev is None:
            return None
        assert ev.asset_materialization.partition == partition
        return {k: v.value for k, v in ev.asset_materialization.metadata.items()}


def _promote(lake, spec, *args, capsys):
    capsys.readouterr()
    code = main(["promote", "--spec", spec, "--lake", lake.root, *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_pass_is_promoted_only_when_opted_in(toy_lake, monkeypatch):
    lake, reg, tmp, _ = toy_lake
    spec = _spec(tmp, NON_INFERIOR)
    monkeypatch.delenv("EVAL_PROMOTE_ON_PASS", raising=False)
    code, result = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h1"))
    assert code == 0 and result["verdict"] == "PASS"
    assert reg.champion("toy_model") == "1"
    partition = f"2@{result['dataset']['snapshot_id']}"
    assert _promotion_metadata(tmp / "h1", partition) == {"promoted": False, "why": "promotion is opt-in and disabled"}

    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    code, again = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h2"))
    assert code == 0 and again == result  # the same evidence set, re-used
    assert reg.champion("toy_model") == "2"
    audit = reg.promotions("toy_model")[-1]
    assert audit["version"] == "2" and audit["previous"] == "1"
    assert audit["evidence"]["result"] == result["paths"]["result"]
    assert audit["evidence"]["baseline"] == "toy_model@1"
    assert audit["evidence"]["baseline_sha256"] == reg.manifest("toy_model", "1").sha256
    assert [g["outcome"] for g in audit["evidence"]["gates"]] == ["PASS"]
    assert _promotion_metadata(tmp / "h2", partition)["promoted"] is True


def test_inconclusive_is_never_promoted(toy_lake, monkeypatch):
    lake, reg, tmp, frame = toy_lake
    monkeypatch.setenv("EVAL_PROMOTE_ON_PASS", "1")
    # The floor is the candidate's exact AUC on the evaluation rows (all of them: the toy spec has no window): the
    # interval straddles it, so the gate can be neither PASS nor FAIL.
    auc = roc_auc_score(frame["y"], fit_model(frame.iloc[:2000]).predict_proba(frame[["a", "b"]])[:, 1])
    spec = _spec(tmp, [{"metric": "roc_auc", "kind": "absolute", "min": float(auc)}])
    code, result = run_evaluation(spec, lake.root, "toy_model@2", dagster_home=str(tmp / "h"))
    assert code == 3 and result["verdict"] == "INCONCLUSIVE"
    (gate,) = result["gates"]
    assert gate["outcome"] == "INCONCLUSIVE" and gate["value"] == pytest.approx(auc, abs=1e-9)
    assert gate["ci"][0] < auc < gate["ci"][1]
    assert reg.champion("toy_model") == "1"
    assert reg.promotions("toy_model")[-1]["version"] == "1"


def test_stale_promotion_is_refused_and_the_sensor_reevaluates_against_the_new_champion(toy_lake, capsys):
    """v2 and v3 both PASS against v1; v2 is promoted; v3's promotion is refused (it never met v2); the
    re-evaluation sensor then requests v3 against v2, and after that evaluation v3 can be promoted."""
    lake, reg, tmp, frame = toy_lake
    register_skops(reg, "3", fit_model(frame.iloc[:2000], c=0.5))  # as good as v2
    spec = _spec(tmp, NON_INFERIOR)
    home = tmp / "home"
    results = {}
    for v in ("2", "3"):
        code, results[v] = run_evaluation(spec, lake.root, f"toy_model@{v}", dagster_home=str(home))
        assert (code, results[v]["verdict"], results[v]["baseline"]["ref"]) == (0, "PASS", "toy_model@1")

    code, out = _promote(lake, spec, "--version", "2", capsys=capsys)
    assert code == 0 and reg.champion("toy_model") == "2"
    assert "toy_model@2 is now the champion (previous: 1)" in out
    code, out = _promote(lake, spec, "--version", "3", capsys=capsys)
    assert code == 2 and reg.champion("toy_model") == "2"
    assert ("toy_model@3 was evaluated against toy_model@1, but the champion is now toy_model@2: it must be "
            "re-evaluated against the current champion") in out

    # The re-evaluation sensor, on the same instance the CLI runs used, asks for v3 against v2 (and for the new
    # champion's own monitoring run on this snapshot).
    spec_obj = load_spec(spec)
    defs = build_definitions([spec_obj], resources={"lake": LakeResource(root=lake.root),
                                                    "settings": SettingsResource()})
    sensor = build_automation(spec_obj, *task_jobs(spec_obj))["sensors"][2]
    assert sensor.name == "toy__reevaluation_sensor"
    snap = results["3"]["dataset"]["snapshot_id"]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        tick = sensor(dg.build_sensor_context(instance=instance, resources={"lake": LakeResource(root=lake.root)}))
        got = {(r.partition_key, r.tags["eval/baseline"], r.tags["eval/trigger"]): r for r in tick.run_requests}
        assert sorted(got) == [(f"2@{snap}", "monitoring", "new_data"), (f"3@{snap}", "2", "new_champion")]
        request = got[(f"3@{snap}", "2", "new_champion")]
        assert request.run_config["resources"]["run_inputs"]["config"] == {
            "candidate_sha256": reg.manifest("toy_model", "3").sha256, "baseline": "2",
            "baseline_sha256": reg.manifest("toy_model", "2").sha256, "monitoring": False}
        for req in tick.dynamic_partitions_requests:
            instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        run = defs.resolve_job_def("toy__evaluate").execute_in_process(
            instance=instance, partition_key=request.partition_key, run_config=request.run_config,
            tags=request.tags, raise_on_error=False)
        assert run.success
    [against_v2] = [r for r in (lake.read_json(f["rel"]) for f in lake.find("evaluations/toy/toy_model/3")
                                if f["rel"].endswith("result.json")) if r["baseline"]["version"] == "2"]
    assert against_v2["verdict"] == "PASS"
    assert against_v2["baseline"]["sha256"] == reg.manifest("toy_model", "2").sha256
    code, out = _promote(lake, spec, "--version", "3", capsys=capsys)
    assert code == 0 and reg.champion("toy_model") == "3"
    assert reg.promotions("toy_model")[-1]["evidence"]["baseline"] == "toy_model@2"


def test_first_champion_and_every_refusal_say_why(tmp_path, capsys):
    lake = Lake(str(tmp_path / "lake"))
    reg = Registry(lake)
    frame = toy_frame(2000)
    land(lake, frame)
    register_skops(reg, "1", fit_model(frame.iloc[:1000]))
    spec = _spec(tmp_path, NON_INFERIOR)

    # Only version 1, no champion: a plain promote has nothing to replace and says how to name the first champion.
    code, out = _promote(lake, spec, "--version", "1", capsys=capsys)
    assert code == 2 and "model 'toy_model' has no champion yet" in out and "promote --initial" in out
    assert reg.champion("toy_model") is None and not lake.exists("registry/toy_model/promotions")
    # Evaluating then would decide nothing (no champion, no absolute gate): exit 2 with what to do, before any run.
    capsys.readouterr()
    code = main(["evaluate", "--spec", spec, "--lake", lake.root, "--candidate", "toy_model@1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "model 'toy_model' has no champion and spec 'toy' has no absolute gates" in err
    assert "eval-pipeline promote --initial" in err
    assert not lake.exists("evaluations") and not lake.exists("snapshots")
    # A version that is not registered.
    code, out = _promote(lake, spec, "--version", "9", "--initial", capsys=capsys)
    assert code == 2 and "toy_model@9" in out and "not registered" in out

    code, out = _promote(lake, spec, "--version", "1", "--initial", "--by", "alice", "--reason", "launch",
                         capsys=capsys)
    assert code == 0 and reg.champion("toy_model") == "1"
    (audit,) = reg.promotions("toy_model")
    assert audit["previous"] is None and audit["evidence"]["initial"] is True and audit["evidence"]["by"] == "alice"
    assert audit["evidence"]["sha256"] == reg.manifest("toy_model", "1").sha256
    assert audit["reason"] == "first champion of 'toy_model', named by alice: launch"

    code, out = _promote(lake, spec, "--version", "1", "--initial", capsys=capsys)
    assert code == 2 and "already has a champion (toy_model@1); --initial only names the first one" in out
    code, out = _promote(lake, spec, "--version", "1", capsys=capsys)
    assert code == 2 and "toy_model@1 is already the champion; nothing to promote" in out

    register_skops(reg, "2", fit_model(frame.iloc[:100], c=0.001))
    code, out = _promote(lake, spec, "--version", "2", capsys=capsys)
    assert code == 2 and "toy_model@2 has never been evaluated" in out and "eval-pipeline evaluate" in out
    assert "pinned_snapshot" not in out and "not found in the lake" not in out

    # Evaluated and FAILing: refused with the verdict and the baseline it FAILed against.
    failing = _spec(tmp_path, [{"metric": "roc_auc", "kind": "absolute", "min": 0.99}], name="failing.yaml")
    code, result = run_evaluation(failing, lake.root, "toy_model@2")
    assert code == 1 and result["verdict"] == "FAIL"
    code, out = _promote(lake, failing, "--version", "2", capsys=capsys)
    snap = result["dataset"]["snapshot_id"]
    assert code == 2 and f"toy_model@2 is FAIL against toy_model@1 on snapshot {snap}; only a PASS" in out
    # The same version under another spec was never evaluated: that evaluation does not count for this spec.
    code, out = _promote(lake, spec, "--version", "2", capsys=capsys)
    assert code == 2 and "only with another version of spec 'toy'" in out
    assert [p["version"] for p in reg.promotions("toy_model")] == ["1"] and reg.champion("toy_model") == "1"
    assert np.isfinite(result["gates"][0]["value"])


def test_two_promoters_at_once_only_one_wins(tmp_path):
    """v2 and v3 both PASSed against v1; two processes' promotions race (threads released together): the
    compare-and-swap under the registry lock lets exactly one through, the other is refused naming the new champion."""
    import threading

    from eval_pipeline import pipeline

    lake = Lake(str(tmp_path / "lake"))
    reg = Registry(lake)
    frame = toy_frame(300)
    for v in ("1", "2", "3"):
        register_skops(reg, v, fit_model(frame, c=0.1 * int(v)))
    reg.set_champion("toy_model", "1", reason="setup")
    spec = load_spec(_spec(tmp_path, NON_INFERIOR))
    ctx = pipeline.TaskContext(lake, spec)

    def passed(version):  # what a PASSing evaluation against v1 records (the fields promotion reads)
        m, b = reg.manifest("toy_model", version), reg.manifest("toy_model", "1")
        return {"mode": "release", "verdict": "PASS", "evidence_id": f"e{version}",
                "candidate": {"ref": m.ref, "version": version, "sha256": m.sha256},
                "baseline": {"ref": b.ref, "version": "1", "sha256": b.sha256},
                "dataset": {"snapshot_id": "s"}, "reproducibility": {"spec_sha256": spec.spec_hash()},
                "paths": {"result": f"evaluations/toy/toy_model/{version}/s/r/result.json"},
                "gates": [{"gate": "g", "metric": "roc_auc", "slice": "overall", "outcome": "PASS", "rule": "r"}]}

    start, outcomes = threading.Barrier(2), {}

    def promote(version):
        start.wait()
        try:
            outcomes[version] = pipeline.promote(ctx, passed(version))["version"]
        except pipeline.PromotionRefused as exc:
            outcomes[version] = str(exc)

    threads = [threading.Thread(target=promote, args=(v,)) for v in ("2", "3")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    winner = reg.champion("toy_model")
    loser = "3" if winner == "2" else "2"
    assert winner in ("2", "3") and outcomes[winner] == winner
    assert f"toy_model@{loser} was evaluated against toy_model@1, but the champion is now toy_model@{winner}" in \
        outcomes[loser]
    assert [p["version"] for p in reg.promotions("toy_model")] == ["1", winner]
    assert not lake.exists("registry/toy_model/promotion.lock")
