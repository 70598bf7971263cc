import numpy as np
import pandas as pd
import pytest

BINARY_METRICS = ["accuracy", "precision", "recall", "f1", "specificity", "balanced_accuracy", "roc_auc",
                  "average_precision", "log_loss", "brier", "ece"]


def make_binary(n=3000, seed=0, round_to=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * x))).astype(int)
    b = 1 / (1 + np.exp(-(x + rng.normal(0, 1.0, n))))
    c = 1 / (1 + np.exp(-(1.3 * x + rng.normal(0, 0.7, n))))
    if round_to is not None:
        b, c = np.round(b, round_to), np.round(c, round_to)
    return pd.DataFrame({"y": y, "b": b, "c": c, "g": rng.choice(["a", "b", "c", "d"], n),
                         "h": rng.choice([1, 2, 3], n), "dist": rng.uniform(0, 3000, n)})


@pytest.fixture
def binary_df():
    return make_binary()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long simulation variants (tests/engine/test_simulation.py); run them "
                                       "with `-m slow` or the full matrix with `python bench/sim_matrix.py`")


def pytest_collection_modifyitems(config, items):
    """``slow`` tests are skipped unless selected explicitly (``-m slow``, ``-m "slow or ..."``) or
    EVAL_SIM_SLOW=1 is set, so the default test command runs only the representative subset."""
    import os

    if "slow" in (config.getoption("markexpr", "") or "") or os.environ.get("EVAL_SIM_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow simulation variant: run with -m slow or EVAL_SIM_SLOW=1")
    for item in items:
        if "slow" in item.keywords and item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
