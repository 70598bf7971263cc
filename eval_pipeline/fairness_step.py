"""The fairness part of an evaluation (spec section ``fairness:``, :mod:`eval_pipeline.fairness_spec`): per-group
counts streamed from the evaluation rows, rates and disparities with paired bootstrap intervals
(:mod:`eval_pipeline.engine.fairness`), and the fairness gates, decided by ``engine.apply_gates`` together with the
metric gates (one multiplicity family, the same tri-state rule).

The counts are taken in their own streamed pass over the joined rows (the reader of ``pipeline.compute_metrics``),
so they do not depend on how the metrics pass is run (in-process or sharded on Dask); the accumulator is O(groups).
"""
from .engine import GateDef
from .engine.fairness import FairnessCombiner, FairnessResult, evaluate_fairness, slice_name, with_fairness
from .spec import EvalSpec


def fairness_gates(spec: EvalSpec, paired: bool) -> list[GateDef]:
    """The fairness section's gates as engine gates on the fairness slice. Without a baseline (monitoring, or no
    champion yet) the gates that compare with it are left out, like non-inferiority metric gates."""
    fs = spec.fairness
    target = [slice_name(fs.sensitive)]
    out = []
    for g in fs.gates:
        if g.paired and not paired:
            continue
        if g.paired:  # max_increase (differences) / max_decrease (ratios): the direction comes from the metric
            out.append(GateDef(g.metric, "non_inferiority", margin=g.max_increase if g.max_increase is not None
                               else g.max_decrease, slices=target, name=g.gate_name()))
        else:
            out.append(GateDef(g.metric, "absolute", min=g.min, max=g.max, slices=target, name=g.gate_name()))
    return out


def evaluate_groups(spec: EvalSpec, batches, predictions: dict, paired: bool) -> FairnessResult:
    """Stream ``batches`` (joined rows: label, sensitive columns, one score column per role in ``predictions``)
    into the per-group counts and evaluate them with the spec's bootstrap settings."""
    fs = spec.fairness
    comb = FairnessCombiner(label=spec.columns.label, predictions=predictions, sensitive=fs.sensitive,
                            threshold=spec.model.threshold)
    acc, offset = comb.create_accumulator(), 0
    for batch in batches:
        comb.add_batch(acc, batch, offset)
        offset += len(batch)
    ev = spec.evaluation
    return evaluate_fairness(comb.finish(acc), metrics=fs.metric_names(),
                             min_group_size=fs.min_group_size or spec.slices.min_size,
                             n_boot=ev.bootstrap_replicates, seed=ev.seed, confidence=ev.confidence,
                             baseline="baseline" if paired else None, candidate="candidate")


def add_fairness(spec: EvalSpec, result, gates: list, reader, predictions: dict, paired: bool):
    """``(result for the gates, gates, fairness dict or None)``: unchanged without a fairness section; otherwise the
    result with the fairness slice and its replicates, the gates plus the fairness gates, and the JSON of the
    per-group rates and disparities (``metrics.json["fairness"]``). ``reader()`` streams the joined rows."""
    if spec.fairness is None:
        return result, gates, None
    fr = evaluate_groups(spec, reader(), predictions, paired)
    return with_fairness(result, fr), list(gates) + fairness_gates(spec, paired), fr.to_dict()
