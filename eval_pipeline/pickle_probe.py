"""Load a pickled model in a throwaway process and score a few rows: ``python -m eval_pipeline.pickle_probe``.

Run by :func:`eval_pipeline.artifact_check.check_artifact` (never imported by the pipeline itself) so that unpickling an
artifact at registration cannot touch the registering process. Arguments: the artifact file, a parquet of feature
rows (or ``-``), ``predict`` or ``predict_proba``, and the output ``.npy`` path. The scores are written as a plain
float64 array (read back with ``allow_pickle=False``); the outcome is one JSON line on stdout.
"""

import json
import sys


def main(argv: list[str]) -> int:
    artifact, rows_path, method, out_path = argv
    try:
        import joblib

        model = joblib.load(artifact)
    except BaseException as exc:  # noqa: BLE001 - report anything, including SystemExit raised by a pickle
        print(json.dumps({"ok": False, "stage": "load", "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        return 1
    result = {"ok": True, "type": f"{type(model).__module__}.{type(model).__qualname__}"}
    if rows_path != "-":
        try:
            import numpy as np
            import pandas as pd

            rows = pd.read_parquet(rows_path)
            out = np.asarray(getattr(model, method)(rows), dtype="float64")
            np.save(out_path, out, allow_pickle=False)
        except BaseException as exc:  # noqa: BLE001
            print(json.dumps({"ok": False, "stage": "score", "error": f"{type(exc).__name__}: {exc}"[:2000]}))
            return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
