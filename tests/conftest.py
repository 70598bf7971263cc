"""Suite-wide settings.

The toy models of tests/toy.py (and the deliberately broken models some tests register) are joblib pickles, a flavor
the pipeline refuses unless the operator opts in with EVAL_ALLOW_PICKLE=1. The suite opts in, as an operator who
trusts their own pickles would (session-wide, so module-scoped fixtures see it too). The tests of the refusal itself
(tests/test_register.py, tests/test_snapshot_scoring.py) unset it; the demo's models are skops and never need it.
"""

import pytest


@pytest.fixture(scope="session", autouse=True)
def _allow_the_suites_own_pickles():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVAL_ALLOW_PICKLE", "1")
        yield
