"""Dataset refresh, whatever the source: landed files (:mod:`.snapshot`) or a warehouse query (:mod:`.sql_source`).

Its own module because the SQL source builds on the file snapshot's machinery: the dispatch sits above both."""
from .lake import Lake
from .snapshot import Snapshot, refresh_files_snapshot
from .spec import EvalSpec
from .sql_source import refresh_sql_snapshot


def refresh_snapshot(lake: Lake, spec: EvalSpec) -> Snapshot:
    """Build (or re-use) the snapshot of everything in the landing zone, or with ``data.sql`` of the warehouse."""
    from .suites import refresh_suites

    suites = refresh_suites(lake, spec)  # each suite's own snapshot, recorded in (and hashed into) the task's
    extra = {"suites": suites} if suites else None
    if spec.data.sql is not None:
        return refresh_sql_snapshot(lake, spec, extra)
    return refresh_files_snapshot(lake, spec, extra)
