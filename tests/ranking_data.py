"""A documented synthetic learning-to-rank data set (no installed package ships real query/relevance data that can be
read offline: scikit-learn has none, ``ir_datasets`` downloads at run time).

``make_ranking(n_queries, seed)``: one row per (query, document):

- ``qid`` ("q0000", ...): the query; ``intent`` (navigational / informational / transactional, a query attribute,
  constant within a query); 5 to 50 documents per query (uniform).
- ``f1``, ``f2``, ``f3``: document features, standard normal. Latent relevance
  ``1.2 f1 + 0.8 f2 + 1.0 f3 [intent == transactional] + N(0, 0.8)``; the graded label ``rel`` (0..3) is the latent
  cut at 1.0, 2.0 and 2.8 (about 2/3 of the documents get 0; some queries have no relevant document at all).
- ``doc_id``: a unique row id.

Everything is a function of ``seed`` (numpy ``default_rng``).
"""
import numpy as np
import pandas as pd

INTENTS = ["informational", "navigational", "transactional"]
FEATURES = ["f1", "f2", "f3", "intent"]


def make_ranking(n_queries: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 51, n_queries)
    qi = np.repeat(np.arange(n_queries), sizes)
    intent = np.asarray(INTENTS)[rng.integers(0, 3, n_queries)][qi]
    n = qi.size
    f1, f2, f3 = rng.normal(size=(3, n))
    latent = 1.2 * f1 + 0.8 * f2 + 1.0 * f3 * (intent == "transactional") + rng.normal(0, 0.8, n)
    rel = np.digitize(latent, [1.0, 2.0, 2.8]).astype("int64")
    return pd.DataFrame({"doc_id": np.arange(n, dtype="int64"), "qid": [f"q{i:04d}" for i in qi], "intent": intent,
                         "f1": f1, "f2": f2, "f3": f3, "rel": rel})
