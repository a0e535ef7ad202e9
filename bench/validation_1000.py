"""End-to-end validation of a 1,000-case synthetic cohort of realistic-size DICOMs, against the
model-only time on the same images (goal, issue #7: within 1.2×).

Cohort: 40 distinct knee phantoms rendered at 2048 px (about 2048×1650, 16-bit, uncompressed CR
DICOM, ~6.7 MB each), written as 1,000 files with their own ids, dates and UIDs. End to end = dry run
(open and decode every image, checks, model inputs kept) + ingest + batch run (SQLite per batch) +
analysis + exports. Model only = the predictor on the same prepared inputs, same batch size, run
once before and once after (this VM's speed drifts) and averaged.
Prints seconds and the ratio; no assertions. Usage: python bench/validation_1000.py [--n 1000] [--dir D]
"""

import timing  # noqa: F401 - puts the project on sys.path
from pathlib import Path

import argparse
import tempfile
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from kneeage import plots, report, validation
from kneeage.cohort import FolderSource, check_cohort, read_manifest
from kneeage.phantom import render_knee, write_dicom
from kneeage.predict import Predictor
from kneeage.store import Store


def make_cohort(d: Path, n: int, size: int = 2048, distinct: int = 40):
    (d / "images").mkdir(parents=True, exist_ok=True)
    if (d / "manifest.csv").exists() and len(pd.read_csv(d / "manifest.csv")) == n:
        return
    rng = np.random.default_rng(0)
    base = []
    for k in range(distinct):
        ba, sex = float(rng.uniform(12, 200)), "F" if k % 2 else "M"
        base.append((render_knee(ba, sex, rng, size), ba))
    rows = []
    for i in range(n):
        ph, ba = base[i % distinct]
        chron = max(1.0, ba + rng.normal(0, 8))
        study = date(2025, 1, 1) + timedelta(days=i)
        birth = study - timedelta(days=round(chron * 30.4375))
        name = f"images/case{i:05d}.dcm"
        write_dicom(d / name, ph.stored, ph.truth, birth=birth, study=study, patient_id=f"P{i:06d}")
        rows.append({"case_id": f"C{i:05d}", "image": name, "sex": ph.truth.sex, "chronological_age_months": round(chron, 2),
                     "reference_bone_age_months": round(ba + rng.normal(0, 6), 1)})
    pd.DataFrame(rows).to_csv(d / "manifest.csv", index=False)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "kneeage_bench_cohort"))
    args = ap.parse_args()
    d = Path(args.dir)
    t = time.perf_counter()
    make_cohort(d, args.n)
    print(f"cohort ready in {d} ({time.perf_counter() - t:.0f} s)")
    pred = Predictor(device="cpu")

    def model_only(inputs, sexes):
        t = time.perf_counter()
        for i in range(0, len(inputs), 8):
            pred.predict_inputs(np.stack(inputs[i:i + 8]), sexes[i:i + 8])
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        warm = check_cohort(read_manifest(d / "manifest.csv").head(len(pd.read_csv(d / "manifest.csv"))), FolderSource(d),
                            workers=2, input_size=pred.input_size)  # also warms the page cache
        inputs0 = [warm.inputs[c][0].astype(np.float32) for c in warm.cases.case_id]
        before = model_only(inputs0, list(warm.cases.sex))
        del warm
        t0 = time.perf_counter()
        src = FolderSource(d)
        check = check_cohort(read_manifest(d / "manifest.csv"), src, workers=2, input_size=pred.input_size)
        t1 = time.perf_counter()
        store = Store(Path(tmp) / "bench.db")
        cid = validation.ingest(store, check, "bench", "bench", src)
        rid = validation.run_model(store, cid, pred, src, batch=8, cache=check.inputs)
        t2 = time.perf_counter()
        cases, summary, meta = validation.results_for(store, rid)
        report.write_validation(Path(tmp) / "out", cases, summary, meta, plots.validation_figures(cases, summary))
        t3 = time.perf_counter()
        after = model_only([check.inputs[c][0].astype(np.float32) for c in cases.case_id], list(cases.sex))
    model = (before + after) / 2
    total = t3 - t0
    print(f"{summary['n_cases']} cases ({check.summary['usable']} usable), MAE {summary['mae']:.2f} months")
    print(f"  dry run (decode + checks)   {t1 - t0:7.1f} s")
    print(f"  ingest + batch run          {t2 - t1:7.1f} s")
    print(f"  analysis + exports          {t3 - t2:7.1f} s")
    print(f"  end to end                  {total:7.1f} s   ({len(cases) / total:.1f} cases/s)")
    print(f"  model only, same inputs     {model:7.1f} s   (mean of a run before and after: {before:.1f}, {after:.1f})")
    print(f"  ratio end-to-end / model    {total / model:7.2f}x  (goal 1.2x)")
