"""External-memory (spill) mode: byte-identical results to the in-memory mode, bounded runs, temp files removed."""
import math
import os

import numpy as np
import pyarrow as pa
import pytest

from eval_pipeline.engine import EngineInputError, SliceConfig, evaluate, evaluate_accumulator, make_combiner
from eval_pipeline.engine.exact import ExactSum
from eval_pipeline.engine.spill import SpilledRun, merge_chunks
from conftest import BINARY_METRICS, make_binary

SL = SliceConfig(columns=["g", "h"], crosses=[["g", "h"], ["g", "dist"]], bins={"dist": [0, 500, 1500, 2500]},
                 min_size=1)
ARGS = dict(task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
            slices=SL, metrics=BINARY_METRICS, n_boot=40, seed=5)


def _data(n=6000, seed=2, round_to=2):
    df = make_binary(n, seed=seed, round_to=round_to)
    df.loc[df.g == "d", "y"] = 1  # single-class slices (g=d and its crosses)
    df.loc[(df.g == "c") & (df.h == 3), "y"] = 0
    if round_to is not None:
        df.loc[df.index[::7], "b"] = 0.5  # one very large tie group (straddles merge chunks)
        df.loc[df.index[::5], "c"] = 0.0
    return df


def _chunks(df, size):
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


@pytest.mark.parametrize("round_to", [2, None])
def test_spill_is_byte_identical_to_in_memory(tmp_path, round_to):
    df = _data(round_to=round_to)
    ref = evaluate(_chunks(df, 900), **ARGS).to_json()
    for spill_rows, size, workers in [(37, 500, 2), (400, 1300, 1), (5000, 2000, 2), (10 ** 8, 900, 2)]:
        got = evaluate(_chunks(df, size), spill_dir=str(tmp_path), spill_rows=spill_rows, workers=workers,
                       **ARGS).to_json()
        assert got == ref, (spill_rows, size, workers)
        assert os.listdir(tmp_path) == []  # the private temp directory is gone


def test_spill_runs_are_on_disk_and_removed(tmp_path):
    df = _data(3000, seed=4)
    comb = make_combiner(task_type="binary_classification", label="y", predictions={"baseline": "b", "candidate": "c"},
                         slices=SL, spill_dir=str(tmp_path), spill_rows=100)
    accs = [comb.create_accumulator() for _ in range(3)]
    for i, ch in enumerate(_chunks(df, 250)):
        comb.add_batch(accs[i % 3], ch)
    spilled = [r for a in accs for runs in a.store.runs.values() for lst in runs.values() for r in lst
               if isinstance(r, SpilledRun)]
    assert len(spilled) > 20
    (d,) = os.listdir(tmp_path)
    assert os.listdir(tmp_path / d)
    got = evaluate_accumulator(comb, comb.merge_accumulators(accs[::-1]), slices=SL, metrics=BINARY_METRICS,
                               n_boot=40, seed=5).to_json()
    assert os.listdir(tmp_path) == []
    assert got == evaluate(df, **ARGS).to_json()


def test_spill_env_var_and_cleanup_on_error(tmp_path, monkeypatch):
    df = _data(2000, seed=6)
    monkeypatch.setenv("EVAL_ENGINE_SPILL_ROWS", "50")
    monkeypatch.setenv("EVAL_ENGINE_SPILL_DIR", str(tmp_path))
    got = evaluate(pa.Table.from_pandas(df).to_batches(max_chunksize=300), **ARGS).to_json()
    monkeypatch.delenv("EVAL_ENGINE_SPILL_ROWS")
    monkeypatch.delenv("EVAL_ENGINE_SPILL_DIR")
    assert got == evaluate(df, **ARGS).to_json()
    assert os.listdir(tmp_path) == []
    bad = df.copy()
    bad.loc[1900, "y"] = 2
    with pytest.raises(EngineInputError):
        evaluate(_chunks(bad, 300), spill_dir=str(tmp_path), spill_rows=50, **ARGS)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 127, 128, 129, 1000, 40_001])
def test_exact_sum_is_correctly_rounded_whatever_the_chunking(n):
    rng = np.random.default_rng(n)
    x = rng.random(n) * 10.0 ** rng.uniform(-300, 300, n) * rng.choice([-1.0, 1.0], n)
    ref = math.fsum(x.tolist())
    for cuts in (1, 3, 17):
        parts = [ExactSum().add(p) for p in np.array_split(x[rng.permutation(n)], cuts)]
        assert ExactSum.total(parts[::-1]).value() == ref


def test_merge_chunks_sorted_union_with_duplicates(tmp_path):
    rng = np.random.default_rng(0)
    runs, allk = [], []
    path = str(tmp_path / "runs.i64")
    off = 0
    with open(path, "wb") as f:
        for i in range(9):
            k = np.sort(rng.integers(0, 30, rng.integers(0, 400)) * (1 + (i % 3))).astype(np.int64)
            allk.append(k)
            if i % 2:
                runs.append(k)
            else:
                k.tofile(f)
                runs.append(SpilledRun(path, off, k.size))
                off += k.size
    for budget in (16, 50, 10_000):
        chunks = list(merge_chunks(runs, budget))
        out = np.concatenate(chunks)
        assert np.array_equal(out, np.sort(np.concatenate(allk)))
        assert max(c.size for c in chunks) <= max(budget, 16 * len(runs)) + 16 * len(runs)
