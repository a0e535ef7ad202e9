"""Several models on one cohort, compared pairwise on the same cases.

The models are stored runs of one cohort: kneeage models, imported ONNX/TorchScript models, or columns of
predictions made elsewhere (:mod:`kneeage.predictions`). For every pair A, B (in the order given) on the
cases that both predicted and that have a reference:

* MAE of each and the paired difference MAE_A − MAE_B with its paired bootstrap CI and Wilcoxon p
  (:func:`kneeage.stats.compare_errors`);
* Bland-Altman of A against B: bias A − B and 95% limits of agreement (:func:`kneeage.stats.bland_altman`);
* agreement of the delayed / normal / advanced call (±2 SD, :mod:`kneeage.reference`) between A and B on
  the cases with sex and chronological age: Cohen's kappa with its CI and the share that agree
  (:func:`kneeage.stats.cohen_kappa`).

One table (:attr:`ModelComparison.table`) and one forest plot of the MAE differences (:func:`forest`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from . import plots, stats
from .conventions import MAX_AGE_MONTHS, SEXES
from .errors import KneeageError, StatsError
from .growth import sds_classes
from .predictions import PREFIX, source_of
from .reference import CATEGORIES
from .report import safe_csv
from .store import Store
from .validation import case_table

COLUMNS = ["model_a", "model_b", "n", "mae_a", "mae_b", "mae_difference", "mae_difference_lower",
           "mae_difference_upper", "wilcoxon_p", "bias_a_minus_b", "loa_lower", "loa_upper", "n_class",
           "kappa", "kappa_lower", "kappa_upper", "class_agreement", "note"]


@dataclass(frozen=True)
class ModelComparison:
    models: tuple[dict, ...]  # label, run_id, source, n (cases with a prediction and a reference), mae
    table: pd.DataFrame  # one row per pair, COLUMNS

    def as_dict(self) -> dict:
        return stats.json_ready({"models": self.models, "pairs": self.table.to_dict("records")})


def run_label(run: dict) -> str:
    """A model's name in tables: with its hash, except for predictions made elsewhere (named by their column)."""
    if (run.get("model_dir") or "").startswith(PREFIX):
        return run["model_name"]
    return f"{run['model_name']} ({run['model_hash'][:8]})"


def compare_models(store: Store, run_ids: list[str], n_boot: int = stats.N_BOOT) -> ModelComparison:
    """Compare 2-N runs of the same cohort pairwise (see the module's notes)."""
    run_ids = list(dict.fromkeys(run_ids))
    if len(run_ids) < 2:
        raise StatsError("comparing models needs at least two runs on the same cohort.")
    runs = [store.run(r) for r in run_ids]
    if len({r["cohort_id"] for r in runs}) > 1:
        raise StatsError("the runs are on different cohorts; compare models on the same cases.")
    labels = [run_label(r) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} [{r['id']}]" for lab, r in zip(labels, runs)]
    tables = {}
    models = []
    for rid, run, lab in zip(run_ids, runs, labels):
        t = case_table(store, rid)
        t = t[(t.status == "done") & t.predicted_bone_age_months.notna()]
        tables[rid] = t.set_index("case_id")
        ok = t[t.reference_bone_age_months.notna()]
        models.append({"label": lab, "run_id": rid, "source": source_of(run), "n": int(len(ok)),
                       "mae": float((ok.predicted_bone_age_months - ok.reference_bone_age_months).abs().mean()) if len(ok) else None})
    rows = []
    for (ra, la), (rb, lb) in combinations(list(zip(run_ids, labels)), 2):
        a, b = tables[ra], tables[rb]
        both = a[["sex", "chronological_age_months", "reference_bone_age_months", "predicted_bone_age_months"]].join(
            b[["predicted_bone_age_months"]], how="inner", rsuffix="_b")
        both = both[both.reference_bone_age_months.notna()]
        pa, pb, ref = both.predicted_bone_age_months, both.predicted_bone_age_months_b, both.reference_bone_age_months
        row = dict.fromkeys(COLUMNS) | {"model_a": la, "model_b": lb, "n": int(len(both))}
        notes = []
        try:
            c = stats.compare_errors(pa, pb, ref, n_boot=n_boot)
            row.update(mae_a=c.mae_a, mae_b=c.mae_b, mae_difference=c.mae_difference, mae_difference_lower=c.mae_difference_ci[0],
                       mae_difference_upper=c.mae_difference_ci[1], wilcoxon_p=c.wilcoxon_p)
            ba = stats.bland_altman(pa, pb)
            row.update(bias_a_minus_b=ba.bias, loa_lower=ba.loa_lower, loa_upper=ba.loa_upper)
        except (KneeageError, ValueError, ArithmeticError) as e:
            notes.append(f"agreement not computed: {e}")
        known = both[both.sex.isin(SEXES) & both.chronological_age_months.notna()
                     & both.chronological_age_months.between(0, MAX_AGE_MONTHS)]
        row["n_class"] = int(len(known))
        if len(known) >= 3:
            try:
                k = stats.cohen_kappa(sds_classes(known.predicted_bone_age_months, known.chronological_age_months, known.sex),
                                      sds_classes(known.predicted_bone_age_months_b, known.chronological_age_months, known.sex),
                                      CATEGORIES)
                row.update(kappa=k.kappa, kappa_lower=k.ci[0], kappa_upper=k.ci[1], class_agreement=k.observed_agreement)
            except (KneeageError, ValueError, ArithmeticError) as e:
                notes.append(f"delayed/normal/advanced agreement not computed: {e}")
        else:
            notes.append("fewer than 3 cases with sex and chronological age: no delayed/normal/advanced agreement")
        row["note"] = "; ".join(str(n).rstrip(".") for n in notes)
        rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    for col in COLUMNS[2:-1]:
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return ModelComparison(tuple(models), table)


def forest(cmp: ModelComparison, note: str | None = None):
    """The forest plot of the pairwise MAE differences (A − B, paired bootstrap CIs), zero marked."""
    t = cmp.table.dropna(subset=["mae_difference"]).assign(label=lambda d: d.model_a + " − " + d.model_b)
    fig = plots.forest(t, "label", "mae_difference", "mae_difference_lower", "mae_difference_upper",
                       title="Models compared pairwise on the same cases: MAE A − B",
                       x_title="Difference in MAE, A − B (months; < 0: A closer to the reference)", note=note)
    fig.add_vline(x=0, line_dash="dot", line_color="grey")
    return fig


def exports(cmp: ModelComparison, note: str | None = None) -> dict[str, bytes]:
    """comparison.csv (one row per pair), comparison.json (models and pairs) and comparison.html (forest plot)."""
    html = forest(cmp, note).to_html(include_plotlyjs=True, full_html=True)
    return {"comparison.csv": safe_csv(cmp.table).encode(),
            "comparison.json": json.dumps(cmp.as_dict(), indent=2).encode(),
            "comparison.html": html.encode()}
