"""The demo model on fresh synthetic cohorts it never saw, beside chronological age (CA) as the estimate.

    python models/fresh_seeds.py MODEL_DIR WORK --seeds 3 4 5 --n 400 [--size 256]

Renders each seed's cohort (knee phantoms, PNG) under WORK unless already there, predicts every knee,
and prints markdown tables: MAE against the true bone age with its BCa 95% CI, CA's MAE, and the paired
difference (model − CA, paired bootstrap 95% CI), for each seed and all seeds together, then by band of
true bone age and by sex (all seeds). SYNTHETIC: says nothing about real patients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kneeage import stats  # noqa: E402
from kneeage.evaluate import predict_manifest  # noqa: E402
from kneeage.phantom import write_cohort  # noqa: E402
from kneeage.predict import Predictor  # noqa: E402


def row(label: str, d: pd.DataFrame, n_boot: int = 2000) -> dict:
    c = stats.compare_errors(d.predicted_bone_age_months, d.chronological_age_months, d.true_bone_age_months, n_boot=n_boot)
    e = stats.error_summary(d.predicted_bone_age_months, d.true_bone_age_months, n_boot=n_boot)
    return {"cohort": label, "n": len(d), "MAE model (95% CI)": f"{e.mae:.2f} ({e.mae_ci[0]:.2f}-{e.mae_ci[1]:.2f})",
            "MAE CA": f"{c.mae_b:.2f}", "model − CA (95% CI)": f"{c.mae_difference:+.2f} ({c.mae_difference_ci[0]:+.2f} to "
            f"{c.mae_difference_ci[1]:+.2f})", "bias": f"{e.bias:+.2f}"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("work")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    pred = Predictor(a.model)
    frames = []
    for seed in a.seeds:
        out = Path(a.work) / f"fresh_{seed}"
        if not (out / "manifest.csv").exists():
            write_cohort(out, a.n, seed=seed, size=a.size, fmt="png", workers=2)
        df = predict_manifest(pred, out / "manifest.csv").merge(pd.read_csv(out / "truth.csv"), on="case_id")
        frames.append(df.assign(seed=seed))
    allc = pd.concat(frames, ignore_index=True)
    allc.to_csv(Path(a.work) / "fresh_seeds_cases.csv", index=False)
    rows = [row(f"seed {s}", allc[allc.seed == s]) for s in a.seeds] + [row("all seeds", allc)]
    print(pd.DataFrame(rows).to_markdown(index=False))
    print()
    allc["band"] = stats.age_band(allc.true_bone_age_months)
    bands = [row(str(b), g, 1000) for b, g in allc.groupby("band", observed=True) if len(g) >= 10]
    print(pd.DataFrame(bands).rename(columns={"cohort": "true bone age"}).to_markdown(index=False))
    print()
    sexes = [row({"F": "girls", "M": "boys"}[s], g, 1000) for s, g in allc.groupby("sex")]
    print(pd.DataFrame(sexes).rename(columns={"cohort": "sex"}).to_markdown(index=False))


if __name__ == "__main__":
    main()
