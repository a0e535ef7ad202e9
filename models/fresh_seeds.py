"""The demo model on fresh synthetic cohorts it never saw, beside chronological age (CA) as the estimate.

    python models/fresh_seeds.py MODEL_DIR WORK --seeds 3 4 5 --n 400 [--size 256]

Renders each seed's cohort (knee phantoms, PNG with the pixel spacing in the manifest, as a site would
state it) under WORK unless already there, runs the model as a site would (localiser, physical framing,
refusals) and prints markdown tables:

* for each seed and all seeds together, on the cases given a number: MAE against the true bone age with
  its BCa 95% CI, CA's MAE on the same cases and the paired difference (model − CA, paired bootstrap 95%
  CI), the bias, the share of reference reads inside the model's 95% interval, and how many results
  were withheld (refused or censored as skeletally mature);
* the same by band of true bone age and by sex (all seeds);
* the slope of the estimate on the true bone age over 12-200 months (OLS), and for censored knees the
  share whose true bone age is at or above the bound.

SYNTHETIC: says nothing about real patients.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kneeage import stats  # noqa: E402
from kneeage.evaluate import predict_manifest  # noqa: E402
from kneeage.phantom import write_cohort  # noqa: E402
from kneeage.predict import Predictor  # noqa: E402


def row(label: str, d: pd.DataFrame, n_boot: int = 2000) -> dict:
    given = d[d.withheld == ""]
    c = stats.compare_errors(given.predicted_bone_age_months, given.chronological_age_months, given.true_bone_age_months, n_boot=n_boot)
    e = stats.error_summary(given.predicted_bone_age_months, given.true_bone_age_months, n_boot=n_boot)
    ref = given.reference_bone_age_months
    cover = ((given.interval_lower <= ref) & (ref <= given.interval_upper)).mean()
    return {"cohort": label, "n": len(d), "withheld": int((d.withheld != "").sum()),
            "MAE model (95% CI)": f"{e.mae:.2f} ({e.mae_ci[0]:.2f}-{e.mae_ci[1]:.2f})", "MAE CA": f"{c.mae_b:.2f}",
            "model − CA (95% CI)": f"{c.mae_difference:+.2f} ({c.mae_difference_ci[0]:+.2f} to {c.mae_difference_ci[1]:+.2f})",
            "bias": f"{e.bias:+.2f}", "interval covers reference": f"{cover:.1%}"}


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
        df = predict_manifest(pred, out / "manifest.csv").merge(pd.read_csv(out / "truth.csv").drop(columns="skeletally_mature"), on="case_id")
        frames.append(df.assign(seed=seed))
    allc = pd.concat(frames, ignore_index=True)
    allc["withheld"] = allc.withheld.fillna("")
    allc.to_csv(Path(a.work) / "fresh_seeds_cases.csv", index=False)
    rows = [row(f"seed {s}", allc[allc.seed == s]) for s in a.seeds] + [row("all seeds", allc)]
    print(pd.DataFrame(rows).to_markdown(index=False))
    print()
    allc["band"] = stats.age_band(allc.true_bone_age_months)
    bands = [row(str(b), g, 1000) for b, g in allc.groupby("band", observed=True) if (g.withheld == "").sum() >= 10]
    print(pd.DataFrame(bands).rename(columns={"cohort": "true bone age"}).to_markdown(index=False))
    print()
    sexes = [row({"F": "girls", "M": "boys"}[s], g, 1000) for s, g in allc.groupby("sex")]
    print(pd.DataFrame(sexes).rename(columns={"cohort": "sex"}).to_markdown(index=False))
    given = allc[(allc.withheld == "") & allc.true_bone_age_months.between(12, 200)]
    slope = np.polyfit(given.true_bone_age_months, given.predicted_bone_age_months, 1)[0]
    print(f"\nSlope of the estimate on the true bone age, 12-200 months (OLS, n={len(given)}): {slope:.3f}.")
    why = allc.withheld[allc.withheld != ""].value_counts()
    print("Withheld: " + (", ".join(f"{k} {v}" for k, v in why.items()) or "none") + f" of {len(allc)}.")
    cens = allc[allc.withheld == "skeletally_mature"]
    if len(cens):
        ok = (cens.true_bone_age_months >= cens.censored_from_months).mean()
        print(f"Censored as skeletally mature: {len(cens)}; true bone age at or above the bound in {ok:.0%}, "
              f"lowest true bone age {cens.true_bone_age_months.min():.0f} months.")


if __name__ == "__main__":
    main()
