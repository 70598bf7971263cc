"""The demo: real 2013 New York flights landed month by month, plus a champion and a flawed candidate to evaluate.

Everything here is plain Python, offline and seeded, so a fresh lake can be seeded in seconds for tests and in well
under a minute for the full data::

    from eval_pipeline.demo import seed_demo
    seed_demo(Lake("/tmp/lake"))                      # full data: 327,346 flights, 12 monthly files, 2 versions
    seed_demo(Lake("/tmp/lake"), sample_frac=0.05)    # a small deterministic subset for tests

What gets seeded (lake-relative paths)::

    incoming/flights/2013-MM.parquet         one file per (local) month: the landing zone the sensors watch
    specs/flights_delay.yaml                 the packaged spec, so the lake describes itself
    registry/flights_delay/1/                baseline: logistic regression (skops), champion
    registry/flights_delay/2/                candidate: gradient boosting (skops), trained through a buggy extract
    training/flights_delay/<version>/extract.parquet   the exact rows and labels each version was fitted on
    suites/flights_delay/golden/             evaluation suite: a seeded sample of 10,000 Jul-Dec flights
    suites/flights_delay/edge_cases/         per-example suite: 10 December flights the candidate gets right

The story the evaluation should tell: the candidate is better overall, but its training extract took Endeavor Air's
(carrier 9E) delays from a partner feed that reports ``scheduled - actual`` (positive = early) from April 2013 on, so
for 9E it learned to predict *early* arrivals. Its own holdout AUC looks fine (the holdout has the same bug); on the
correctly labelled evaluation months its AUC for carrier 9E collapses to about 0.5. Overall gates pass, the 9E gate
fails: exactly what per-slice non-inferiority gates are for.

Training uses one thread (threadpoolctl): with OpenMP on a busy 2-core machine HistGradientBoosting was measured
10-30x slower with two threads than with one.
"""
from .data import flights_frame, land_monthly_files, packaged_spec_path
from .models import canonical_skops, skops_bytes
from .seed import register_predictions_model, seed_demo, train_and_register, train_and_register_regression

# The demo's API. The constants of the story (columns, the bug, the months) are eval_pipeline.demo.data's, the
# model pipelines eval_pipeline.demo.models'.
__all__ = ["seed_demo", "flights_frame", "land_monthly_files", "packaged_spec_path", "train_and_register",
           "train_and_register_regression", "register_predictions_model", "skops_bytes", "canonical_skops"]
