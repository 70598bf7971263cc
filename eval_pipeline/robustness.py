"""Robustness stress tests: re-score the candidate on perturbed copies of the evaluation rows.

Each perturbation of the spec's ``robustness:`` section (:mod:`.robustness_spec`) gives the candidate's metrics on
perturbed inputs minus its metrics on the same rows unperturbed, with paired bootstrap intervals from the engine
(the clean scores play the baseline, the perturbed scores the candidate), and optionally gates on that delta
(``max_drop``: non-inferiority with margin ``max_drop``).

- Rows: a deterministic sample of at most ``max_rows`` evaluation rows, the ones with the smallest seeded hash of
  their id, so the same rows are chosen whatever the snapshot's file or batch layout (cost bound: every
  perturbation re-scores at most ``max_rows`` rows).
- Perturbations are seeded by (evaluation seed, perturbation index): reruns are byte-identical.
  ``gaussian_noise`` adds N(0, (scale x sd)^2), sd the column's standard deviation on the sample;
  ``missing`` writes nulls; ``unseen_category`` writes ``value``; ``swap_category`` writes another category seen in
  the column; ``boundary`` writes the column's min or max; ``out_of_range`` writes max + factor x sd or
  min - factor x sd.
- ``covariate_shift`` does not change inputs but the population: row i is kept with probability
  min(1, w_i / q99(w)) (w_i = exp(strength x z_i), or the categorical ``weights``; capping at the 99th percentile
  instead of the max keeps a usable sample, at the price of flattening the top 1 % of weights), by a hashed uniform
  of its id. The shifted rows are a
  slice of the sample, so "metric on the shifted population minus metric on all rows" is a paired difference of two
  slices of ONE bootstrap (same Poisson weights), decided by the same gate rule.
- A model that raises or returns non-finite / out-of-range scores on a perturbation is a finding: that
  perturbation's status is ``error`` with the message, and each of its gates FAILs. The pipeline goes on.
- Multiplicity: Holm (or the spec's method) within a perturbation's gate rows, Bonferroni across perturbations
  (each gets alpha / number of gated perturbations).
- Predictions-flavor models cannot be re-scored: the section is reported as skipped.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .robustness_spec import CATEGORICAL_ONLY, NUMERIC_ONLY, PerturbationSpec
from .scoring import LoadedModel, ScoringError, _predict_batch
from .spec import EvalSpec

SHIFT_COLUMN = "__in_shift__"


class RobustnessError(ValueError):
    """A robustness section that cannot run on this data; the message names the perturbation and column."""


def _hash_key(seed: int, salt: str) -> str:
    return f"{salt}{seed:d}".ljust(16, "0")[:16]  # pandas' hash_array wants a 16-character key


def id_hash(ids, seed: int, salt: str = "rob") -> np.ndarray:
    """A seeded uint64 hash of row ids that does not depend on row order or batch layout."""
    values = pd.Series(ids).astype(str).to_numpy(dtype=object)
    return pd.util.hash_array(values, hash_key=_hash_key(seed, salt))


def sample_rows(batches, id_col: str, max_rows: int, seed: int) -> pd.DataFrame:
    """The ``max_rows`` rows with the smallest seeded id hash, streamed: memory is bounded by max_rows + one batch."""
    kept, keys = None, None
    for batch in batches:
        frame = batch.to_pandas() if hasattr(batch, "to_pandas") else batch
        h = id_hash(frame[id_col], seed)
        frame = frame.reset_index(drop=True)
        if kept is not None:
            frame = pd.concat([kept, frame], ignore_index=True)
            h = np.concatenate([keys, h])
        if len(frame) > max_rows:
            order = np.argsort(h, kind="stable")[:max_rows]
            order.sort()
            frame, h = frame.iloc[order].reset_index(drop=True), h[order]
        kept, keys = frame, h
    if kept is None:
        return pd.DataFrame()
    order = np.argsort(keys, kind="stable")  # the sample's order is the hash order: layout-free
    return kept.iloc[order].reset_index(drop=True)


def _is_categorical(frame: pd.DataFrame, col: str, spec: EvalSpec) -> bool:
    return col in spec.columns.categorical or not pd.api.types.is_numeric_dtype(frame[col])


def _columns_for(p: PerturbationSpec, frame: pd.DataFrame, spec: EvalSpec) -> list[str]:
    feats = list(spec.columns.features)
    cols = list(p.columns)
    if not cols:
        want_cat = p.kind in CATEGORICAL_ONLY
        cols = [c for c in feats if _is_categorical(frame, c, spec) == want_cat] if (
            p.kind in NUMERIC_ONLY + CATEGORICAL_ONLY) else feats
    for c in cols:
        if c not in frame.columns:
            raise RobustnessError(f"robustness perturbation '{p.name}': column {c!r} is not a feature of task "
                                  f"'{spec.task}' (columns.features: {feats})")
        cat = _is_categorical(frame, c, spec)
        if p.kind in NUMERIC_ONLY and cat:
            raise RobustnessError(f"robustness perturbation '{p.name}' ({p.kind}): column {c!r} is categorical; "
                                  f"{p.kind} needs a numeric column")
        if p.kind in CATEGORICAL_ONLY and not cat:
            raise RobustnessError(f"robustness perturbation '{p.name}' ({p.kind}): column {c!r} is numeric; "
                                  f"{p.kind} needs a categorical column (list it in columns.categorical)")
    if not cols:
        raise RobustnessError(f"robustness perturbation '{p.name}' ({p.kind}): no column to perturb; list columns")
    return cols


def _sd(x: pd.Series) -> float:
    v = pd.to_numeric(x, errors="coerce").to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(np.std(v)) if v.size else 0.0


def perturb(frame: pd.DataFrame, p: PerturbationSpec, spec: EvalSpec, rng: np.random.Generator) -> pd.DataFrame:
    """A perturbed copy of the feature columns of ``frame`` (covariate_shift: unchanged)."""
    out = frame.copy()
    if p.kind == "covariate_shift":
        return out
    n = len(out)
    for col in _columns_for(p, frame, spec):
        rows = rng.random(n) < p.fraction
        x = out[col]
        if p.kind == "gaussian_noise":
            noise = rng.normal(0.0, p.scale * _sd(x), n)
            out[col] = np.where(rows, x.astype("float64") + noise, x.astype("float64"))
        elif p.kind == "missing":
            out[col] = x.astype("float64" if not _is_categorical(frame, col, spec) else "object").where(~rows, None)
        elif p.kind == "unseen_category":
            out[col] = x.astype("object").where(~rows, p.value)
        elif p.kind == "swap_category":
            seen = sorted(x.dropna().astype(str).unique().tolist())
            if len(seen) < 2:
                raise RobustnessError(f"robustness perturbation '{p.name}': column {col!r} has fewer than two "
                                      f"categories in the sample; nothing to swap")
            pick = rng.integers(0, len(seen) - 1, n)
            cur = x.astype(str).map({v: i for i, v in enumerate(seen)}).fillna(-1).to_numpy(dtype=np.int64)
            other = np.where(pick >= cur, pick + 1, pick)  # uniform over the categories other than the row's own
            other = np.where(cur < 0, pick, other)
            out[col] = x.astype("object").where(~rows, pd.Series(np.asarray(seen, dtype=object)[other], index=x.index))
        else:  # boundary / out_of_range (numeric)
            v = pd.to_numeric(x, errors="coerce").astype("float64")
            lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
            if p.kind == "out_of_range":
                lo, hi = lo - p.factor * _sd(x), hi + p.factor * _sd(x)
            side = rng.random(n) < 0.5
            out[col] = np.where(rows, np.where(side, lo, hi), v)
    return out


def shift_mask(frame: pd.DataFrame, p: PerturbationSpec, spec: EvalSpec, seed: int) -> np.ndarray:
    """covariate_shift: which sample rows the shifted population keeps (probability w / max w, hashed uniform)."""
    col = _columns_for(p, frame, spec)[0]
    x = frame[col]
    if _is_categorical(frame, col, spec):
        w = x.astype(str).map({str(k): float(v) for k, v in p.weights.items()}).fillna(1.0).to_numpy(dtype=np.float64)
    else:
        v = pd.to_numeric(x, errors="coerce").to_numpy(dtype=np.float64)
        sd = _sd(x) or 1.0
        z = (v - np.nanmean(v)) / sd
        w = np.exp(np.clip(p.strength * np.nan_to_num(z), -50, 50))
    if not np.isfinite(w).all() or (w < 0).any() or w.max() <= 0:
        raise RobustnessError(f"robustness perturbation '{p.name}': weights must be finite and >= 0 with one > 0")
    u = (id_hash(frame[spec.columns.id], seed, salt="shift") >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    cap = float(np.quantile(w, 0.99)) or float(w.max())  # rejection sampling against the 99th percentile, not the
    return u < np.minimum(1.0, w / cap)  # max: one extreme row would otherwise shrink the shifted sample to nothing


def score_safely(loaded: LoadedModel, features: pd.DataFrame, spec: EvalSpec) -> tuple[np.ndarray | None, str | None]:
    """The model's scores, or None and the finding (raised, non-finite or out-of-range scores)."""
    try:
        s = _predict_batch(loaded, features, spec)
    except ScoringError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a model failing on odd inputs is the finding itself
        return None, f"model {loaded.manifest.ref} raised: {type(exc).__name__}: {exc}"
    bad = ~np.isfinite(s)
    if spec.task_type != "regression":
        bad |= (s < 0) | (s > 1)
    if bad.any():
        rows = bad.any(axis=1) if bad.ndim == 2 else bad
        return None, f"model {loaded.manifest.ref} returned {int(rows.sum())} non-finite or out-of-range score(s)"
    return s, None


# -- evaluation of the perturbations -----------------------------------------------------------------------------
def _with_scores(frame: pd.DataFrame, role: str, s: np.ndarray) -> tuple[pd.DataFrame, str | list[str]]:
    if s.ndim == 1:
        frame[role] = s
        return frame, role
    cols = [f"{role}__{j}" for j in range(s.shape[1])]
    for j, c in enumerate(cols):
        frame[c] = s[:, j]
    return frame, cols


def _engine_kwargs(spec: EvalSpec) -> dict:
    ev = spec.evaluation
    return dict(task_type=spec.task_type, label=spec.columns.label, metrics=spec.metric_names(),
                threshold=spec.model.threshold, classes=spec.model.classes, top_k=spec.model.top_k,
                ece_bins=ev.ece_bins, n_boot=ev.bootstrap_replicates, seed=ev.seed, confidence=ev.confidence)


def _paired_result(base: pd.DataFrame, clean: np.ndarray, perturbed: np.ndarray, spec: EvalSpec):
    from .engine import SliceConfig, evaluate

    frame = base[[spec.columns.label]].copy()
    frame, c_cols = _with_scores(frame, "clean", clean)
    frame, p_cols = _with_scores(frame, "perturbed", perturbed)
    return evaluate(frame, predictions={"clean": c_cols, "perturbed": p_cols}, baseline="clean",
                    candidate="perturbed", slices=SliceConfig(min_size=1), **_engine_kwargs(spec))


def _shift_result(base: pd.DataFrame, clean: np.ndarray, keep: np.ndarray, spec: EvalSpec):
    """Shifted population (a slice of the sample) vs all rows, as a paired result the gate rule can decide."""
    from .engine import SliceConfig, evaluate
    from .engine.evaluate import EvaluationResult

    frame = base[[spec.columns.label]].copy()
    frame[SHIFT_COLUMN] = np.where(keep, "in", "out")
    frame, cols = _with_scores(frame, "candidate", clean)
    res = evaluate(frame, predictions={"candidate": cols}, baseline=None, candidate="candidate",
                   slices=SliceConfig(columns=[SHIFT_COLUMN], min_size=spec.slices.min_size), **_engine_kwargs(spec))
    by = {s["slice"]: s for s in res.slices}
    everything, shifted = by["overall"], by.get(f"{SHIFT_COLUMN}=in")
    lo_q, hi_q = (1 - res.confidence) / 2, (1 + res.confidence) / 2
    reps, delta = {}, {}
    for m in res.metrics:
        a, b = everything["models"]["candidate"][m], (shifted or {}).get("models", {}).get("candidate", {}).get(m, {})
        ra, rb = res.replicates.get(("overall", "candidate", m)), res.replicates.get((f"{SHIFT_COLUMN}=in", "candidate", m))
        if a.get("value") is None or b.get("value") is None or ra is None or rb is None:
            delta[m] = {"value": None, "ci": None, "undefined": a.get("undefined") or b.get("undefined") or "no rows"}
            continue
        d = np.asarray(rb, dtype=np.float64) - np.asarray(ra, dtype=np.float64)
        ok = d[~np.isnan(d)]
        ci = [float(np.quantile(ok, lo_q)), float(np.quantile(ok, hi_q))] if ok.size else None
        delta[m] = {"value": b["value"] - a["value"], "ci": ci, "undefined": None}
        reps[("overall", "delta", m)] = d
        reps[("overall", "perturbed", m)], reps[("overall", "clean", m)] = rb, ra
    row = {"slice": "overall", "columns": [], "n": shifted["n"] if shifted else 0,
           "status": shifted["status"] if shifted else "too_small",
           "models": {"clean": everything["models"]["candidate"],
                      "perturbed": shifted["models"]["candidate"] if shifted else {}}, "delta": delta}
    if shifted and shifted.get("too_small"):
        row["too_small"] = shifted["too_small"]
    return EvaluationResult(task_type=res.task_type, n_rows=res.n_rows, threshold=res.threshold,
                            confidence=res.confidence, n_boot=res.n_boot, seed=res.seed, metrics=res.metrics,
                            roles=["clean", "perturbed"], baseline="clean", candidate="perturbed", slices=[row],
                            warnings=res.warnings, replicates=reps)


def _metric_rows(result) -> dict:
    s = result.slices[0]
    out = {}
    for m in result.metrics:
        c, p, d = s["models"].get("clean", {}).get(m, {}), s["models"].get("perturbed", {}).get(m, {}), s["delta"].get(m, {})
        out[m] = {"clean": c.get("value"), "perturbed": p.get("value"), "perturbed_ci": p.get("ci"),
                  "delta": d.get("value"), "ci": d.get("ci"), "undefined": d.get("undefined")}
    return out


def _gate_defs(spec: EvalSpec, name: str):
    from .engine import GateDef

    return [GateDef(g.metric, "non_inferiority", margin=g.max_drop, slices="overall",
                    name=f"robustness:{name}:{g.metric}")
            for g in spec.robustness.gates if g.perturbations is None or name in g.perturbations]


def _failed_rows(gates, why: str) -> list[dict]:
    return [{"gate": g.name, "metric": g.metric, "slice": "overall", "kind": "robustness", "margin": g.margin,
             "outcome": "FAIL", "value": None, "baseline_value": None, "delta": None, "ci": None, "n": None,
             "rule": f"the candidate failed on this perturbation ({why}) → FAIL"} for g in gates]


def _verdict(rows: list[dict]) -> str | None:
    from .engine.gates import worst_verdict

    return worst_verdict(*(r["outcome"] for r in rows))


def run_robustness(sample: pd.DataFrame, loaded: LoadedModel, spec: EvalSpec) -> dict:
    """Every perturbation of ``spec.robustness`` on ``sample`` (id, label and feature columns): metric deltas
    against the unperturbed candidate with paired intervals, gate rows and a verdict (None without gates)."""
    from .engine import apply_gates

    rob, seed = spec.robustness, spec.evaluation.seed
    feats = list(spec.columns.features)
    clean, err = score_safely(loaded, sample[feats], spec)
    if clean is None:
        raise RobustnessError(f"robustness: the candidate cannot score the unperturbed sample: {err}")
    gated = [p for p in rob.perturbations if _gate_defs(spec, p.name)]
    alpha = (1.0 - spec.evaluation.confidence) / 2.0 / max(1, len(gated))  # Bonferroni across perturbations
    out = []
    for i, p in enumerate(rob.perturbations):
        gates = _gate_defs(spec, p.name)
        entry = {"name": p.name, "kind": p.kind, "columns": _columns_for(p, sample, spec), "fraction": p.fraction,
                 "status": "ok", "error": None, "rows": len(sample), "metrics": {}, "gates": [], "verdict": None}
        if p.kind == "covariate_shift":
            keep = shift_mask(sample, p, spec, seed)
            entry["rows"] = int(keep.sum())
            result = _shift_result(sample, clean, keep, spec)
        else:
            perturbed, err = score_safely(loaded, perturb(sample[feats], p, spec, np.random.default_rng([seed, i]))
                                          [feats], spec)
            if perturbed is None:
                entry.update(status="error", error=err, gates=_failed_rows(gates, err))
                entry["verdict"] = _verdict(entry["gates"])
                out.append(entry)
                continue
            result = _paired_result(sample, clean, perturbed, spec)
        entry["metrics"] = _metric_rows(result)
        if gates:
            report = apply_gates(result, gates, multiplicity=spec.evaluation.multiplicity, alpha=alpha)
            entry["gates"] = report.gates
            entry["warnings"] = report.warnings
        entry["verdict"] = _verdict(entry["gates"])
        out.append(entry)
    rows = [g for e in out for g in e["gates"]]
    return {"rows": len(sample), "max_rows": rob.max_rows, "seed": seed, "alpha_per_perturbation": alpha,
            "perturbations": out, "verdict": _verdict(rows)}


def evaluate_robustness(lake, registry, spec: EvalSpec, snap, manifest, trusted_types=None) -> dict | None:
    """The ``robustness`` block of a result: the candidate re-scored on the spec's perturbations of a hashed sample
    of the snapshot's evaluation rows. None when the spec has no robustness section; ``status: skipped`` for a
    predictions-flavor candidate (there is no model to re-score)."""
    from .scoring import load_model, trusted_types_for
    from .snapshot import eval_rows

    if spec.robustness is None or not spec.robustness.perturbations:
        return None
    if manifest.flavor == "predictions":
        return {"status": "skipped", "verdict": None, "perturbations": [],
                "reason": f"model {manifest.ref} is a predictions-flavor model: precomputed scores cannot be "
                          f"re-scored on perturbed inputs"}
    cols = list(dict.fromkeys([spec.columns.id, spec.columns.label] + list(spec.columns.features)))
    sample = sample_rows(eval_rows(lake, snap, spec, cols), spec.columns.id, spec.robustness.max_rows,
                         spec.evaluation.seed)
    loaded = load_model(registry, manifest, trusted_types_for(spec, trusted_types))
    return {"status": "ok", "model": manifest.ref, **run_robustness(sample, loaded, spec)}


def with_robustness(gates_dict: dict, block: dict | None) -> dict:
    """The gates report with the robustness gate rows appended (``kind`` robustness rows keep the engine's row keys)
    and the verdict made the worse of the two: the robustness gates are their own multiplicity family (Bonferroni
    across perturbations at the report's alpha), like a second gate matrix."""
    from .engine.gates import append_family

    if not block or not block.get("verdict"):
        return gates_dict
    rows = [dict(g, family="robustness") for p in block["perturbations"] for g in p.get("gates", [])]
    return append_family(gates_dict, rows, block["verdict"])
