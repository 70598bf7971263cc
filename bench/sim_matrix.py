"""Full simulation matrix of issue 8 item 5: coverage of 95 % intervals and false-FAIL of the gate matrix.

Runs every cell of tests/engine/sim.py (7 score shapes x 3 slice sizes x 3 pairings for coverage, 13 false-FAIL
cases), prints a table, and as the LAST line one JSON object with every cell's coverage / false-FAIL rate, its
binomial SE and whether it passes the suite's rule. Takes ~10-15 min on 2 idle cores.

    .venv/bin/python bench/sim_matrix.py                 # the full matrix on the engine importable from here
    .venv/bin/python bench/sim_matrix.py --only band01   # cells whose label contains "band01"
    .venv/bin/python bench/sim_matrix.py --ref           # + exact row-level reference bootstrap on the default cells
    cd /tmp && PYTHONPATH=/path/to/other/checkout python /work/main/bench/sim_matrix.py   # another engine version
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "engine"))

import sim  # noqa: E402


def _fmt(c):
    s = f"{c.coverage:.3f}"
    if c.zero_width > 0:
        s += f" z{c.zero_width:.0%}"
    if c.out_of_range:
        s += f" oor{c.out_of_range}"
    if c.lattice:
        s += " L"
    if c.flagged > 0:
        s += f" f{c.flagged:.0%}"
    return s + ("" if c.ok else " !")


def _cov_table(name, cells, R, runner):
    out, failing = {}, []
    lo_b, hi_b, se = sim.coverage_bounds(R)
    print(f"\n== {name}: coverage of 95 % intervals, R={R} datasets per cell, allowed [{lo_b:.3f}, {hi_b:.3f}] "
          f"(SE {se:.4f}); '!' fails, zN% = share of zero-width intervals, oorK = K intervals out of range, "
          f"L = lattice delta (not asserted), fN% = share flagged unreliable by the engine (coverage on the rest)")
    print(f"{'cell':32s} {'role':9s} " + " ".join(f"{m[:14]:>16s}" for m in sim.METRICS) + "   secs")
    for g in cells:
        cell = runner(g)
        checks = {(c.role, c.metric): c for c in sim.check_cell(cell)}
        out[g.label] = {}
        for role in ("baseline", "candidate", "delta"):
            row = []
            out[g.label][role] = {}
            for m in sim.METRICS:
                c = checks[(role, m)]
                row.append(f"{_fmt(c):>16s}")
                out[g.label][role][m] = {"coverage": round(c.coverage, 4), "se": round(c.se, 4), "ok": c.ok,
                                         "zero_width": round(c.zero_width, 4), "out_of_range": c.out_of_range,
                                         "mean_width": c.mean_width, "miss_low": c.miss_low,
                                         "miss_high": c.miss_high, "upper_bound_applies": c.upper_applies,
                                         "flagged": round(c.flagged, 4), "n_assessed": c.n_assessed,
                                         "asserted": c.assessable}
                if not c.ok:
                    failing.append(f"{g.label} {role}:{m} cov={c.coverage:.3f}"
                                   + (f" zero-width={c.zero_width:.0%}" if c.zero_width else "")
                                   + (f" out-of-range={c.out_of_range}" if c.out_of_range else ""))
            print(f"{g.label:32s} {role:9s} " + " ".join(row) + (f"  {cell.seconds:5.1f}" if role == "delta" else ""),
                  flush=True)
    return out, failing


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--R", type=int, default=400, help="datasets per coverage cell")
    ap.add_argument("--ff-R", type=int, default=400, help="runs per false-FAIL case")
    ap.add_argument("--n-boot", type=int, default=400)
    ap.add_argument("--only", default=None, help="substring of the cell labels to run")
    ap.add_argument("--ref", action="store_true", help="also run the exact row-level reference bootstrap "
                                                       "(default cells, R=200; slow)")
    a = ap.parse_args()
    import eval_pipeline.engine as eng
    t0 = time.perf_counter()
    print(f"engine: {eng.__file__}")
    cells = [g for g in sim.coverage_cells() if a.only is None or a.only in g.label]
    cov, failing = _cov_table("engine", cells, a.R, lambda g: sim.run_cell(g, R=a.R, n_boot=a.n_boot))
    ref = {}
    if a.ref:
        rc = [g for g in sim.DEFAULT_CELLS if a.only is None or a.only in g.label]
        ref, _ = _cov_table("reference (exact row-level Poisson bootstrap, same datasets)", rc, 200,
                            lambda g: sim.run_reference_cell(g, R=200, n_boot=a.n_boot))
    ff = {}
    cases = [c for c in sim.false_fail_cases() if a.only is None or a.only in c.label]
    print(f"\n== false-FAIL of the gate matrix under equally good models (margin as listed, Holm, alpha "
          f"{sim.ALPHA}), R={a.ff_R} runs; allowed <= alpha + 2 SE")
    for c in cases:
        r = sim.run_false_fail(c, R=a.ff_R)
        ff[c.label] = {"rate": r.rate, "se": round(r.se, 4), "bound": round(r.bound, 4), "ok": r.ok, "k": r.k,
                       "n_boot": r.n_boot, "fail_rows": r.fail_rows}
        if not r.ok:
            failing.append(f"FF {c.label} rate={r.rate:.3f}")
        print(f"{'ok ' if r.ok else 'BAD'} {c.label:80s} {r.rate:.3f} (SE {r.se:.3f}, <= {r.bound:.3f}) "
              f"k={r.k} B={r.n_boot} FAIL rows {r.fail_rows}  {r.seconds:.1f}s", flush=True)
    print(f"\nfailing cells ({len(failing)}):")
    for f in failing:
        print("  " + f)
    print(f"total {time.perf_counter() - t0:.0f}s")
    print(json.dumps({"engine": eng.__file__, "R": a.R, "ff_R": a.ff_R, "n_boot": a.n_boot, "alpha": sim.ALPHA,
                      "coverage": cov, "reference": ref, "false_fail": ff, "failing": failing}))


if __name__ == "__main__":
    main()
