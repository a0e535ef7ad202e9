"""End-to-end validation of a 1,000-case synthetic cohort of realistic-size DICOMs, against the
model-only time on the same images (goal, issues #7 and #22: within 1.2×), with where the time goes.

Cohort: 40 distinct knee phantoms rendered at 2048 px (about 2048×1667, 10-bit in 16-bit cells,
uncompressed CR DICOM, ~6.8 MB each), written as 1,000 files with their own ids, dates and UIDs. End to
end = dry run (open and decode every image, checks, the model's inputs made and kept) + ingest + batch run
(database per batch) + analysis + exports. Model only = the predictor on the same images already decoded
in memory: its own framing (localiser, physical window) and the fold ensemble, same threads and batch
size; run once before and once after (this VM's speed drifts) and averaged.

Also printed:
* the decode of one file (median over the 40 distinct files, one thread, bytes already in memory; goal
  issue #22: ≤ 8 ms), split into hashing, DICOM parsing and pixels, next to the previous release's decode
  (pydicom's pixel_array, then rescale, window, scaling and inversion one by one) in the same run;
* the dry run's time by stage, summed over its threads: reading the files, decoding them, making the
  model inputs (crop, reduce, resize); and the manifest checks alone, timed without images;
* the floor of the dry run on this machine: reading each file, its sha256 (the content hash is kept)
  and one pass turning its 16-bit pixels into float32, spread over the decoding threads.
Prints seconds and ratios; no assertions. Usage: python bench/validation_1000.py [--n 1000] [--dir D]
"""

import timing  # noqa: F401 - puts the project on sys.path
from pathlib import Path

import argparse
import hashlib
import io
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pydicom

from kneeage import cohort as cohort_module
from kneeage import report, validation
from kneeage.cohort import FolderSource, check_cohort, read_manifest
from kneeage.imaging import load_radiograph
from kneeage.phantom import render_knee, write_dicom
from kneeage.predict import Predictor
from kneeage.store import Store
from tests.test_imaging import _previous_release_pixels

WORKERS = 2


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


def med_ms(fn, items, repeats=3):
    """Median milliseconds of fn(item) over items (best of ``repeats`` per item)."""
    out = []
    for it in items:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn(it)
            best = min(best, time.perf_counter() - t)
        out.append(best)
    return float(np.median(out)) * 1000


def previous_decode(data: bytes):
    """The previous release's load_radiograph for these files: hash, parse, pydicom pixels, LUTs step by step."""
    hashlib.sha256(data).hexdigest()
    return _previous_release_pixels(pydicom.dcmread(io.BytesIO(data), force=True))


def floor_ms(data: bytes):
    """What any decode of the file must do: hash it and turn its 16-bit pixels into float32 once."""
    hashlib.sha256(data).hexdigest()
    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return np.frombuffer(ds.PixelData, "<u2").astype(np.float32)


class StageClock:
    """Sums the wall time of the dry run's stages over all threads, by wrapping the functions it calls."""

    def __init__(self):
        self.total = defaultdict(float)
        self.lock = threading.Lock()

    def wrap(self, stage, fn):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                with self.lock:
                    self.total[stage] += time.perf_counter() - t
        return timed


def decode_report(d: Path):
    files = [(d / "images" / f"case{i:05d}.dcm").read_bytes() for i in range(40)]
    new = med_ms(lambda b: load_radiograph(b, name="x"), files)
    old = med_ms(previous_decode, files)
    hashing = med_ms(lambda b: hashlib.sha256(b).hexdigest(), files)
    parsing = med_ms(lambda b: pydicom.dcmread(io.BytesIO(b), force=True), files)
    read = med_ms(lambda i: (d / "images" / f"case{i:05d}.dcm").read_bytes(), range(40))
    floor = med_ms(floor_ms, files)
    print(f"decode of one {len(files[0]) / 1e6:.1f} MB CR (median of 40 files, bytes in memory): {new:.1f} ms "
          f"(previous release, same run: {old:.1f} ms; goal ≤ 8 ms) — of which sha256 {hashing:.1f} ms, DICOM parse "
          f"{parsing:.1f} ms, pixels to float {new - hashing - parsing:.1f} ms; reading the file {read:.1f} ms; "
          f"floor (hash + one float32 pass) {floor:.1f} ms", flush=True)
    return read + floor


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--dir", default=str(Path(tempfile.gettempdir()) / "kneeage_bench_cohort"))
    args = ap.parse_args()
    d = Path(args.dir)
    t = time.perf_counter()
    make_cohort(d, args.n)
    print(f"cohort ready in {d} ({time.perf_counter() - t:.0f} s)", flush=True)
    pred = Predictor(device="cpu")
    manifest = read_manifest(d / "manifest.csv")
    sexes = list(manifest.sex)
    distinct = [load_radiograph(d / "images" / f"case{i:05d}.dcm") for i in range(40)]  # the cohort's 40 images

    def model_only():
        """The model on the cohort's images already decoded in memory: its own framing (localiser and
        physical window, in WORKERS threads as the run makes them) and the fold ensemble, in batches of 8."""
        t = time.perf_counter()
        with ThreadPoolExecutor(WORKERS) as pool:
            inputs = list(pool.map(lambda i: pred.prepare(distinct[i % 40].pixels, "auto", distinct[i % 40].pixel_spacing_mm),
                                   range(len(manifest))))
        for i in range(0, len(inputs), 8):
            pred.predict_inputs(np.stack(inputs[i:i + 8]), sexes[i:i + 8])
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        check_cohort(manifest, FolderSource(d), workers=WORKERS)  # warms the page cache
        before = model_only()
        floor_per_file = decode_report(d)
        t = time.perf_counter()
        check_cohort(manifest, FolderSource(d), decode=False)
        checks = time.perf_counter() - t
        clock = StageClock()
        load = cohort_module.load_radiograph
        cohort_module.load_radiograph = clock.wrap("decode", load)
        prepare = pred.prepare
        pred.prepare = clock.wrap("model input", prepare)
        t0 = time.perf_counter()
        src = FolderSource(d)
        src.read = clock.wrap("read", src.read)
        check = validation.dry_run(d / "manifest.csv", src, model=pred, workers=WORKERS)
        t1 = time.perf_counter()
        cohort_module.load_radiograph = load
        pred.prepare = prepare
        store = Store(Path(tmp) / "bench.db")
        cid = validation.ingest(store, check, "bench", "bench", src)
        rid = validation.run_model(store, cid, pred, src, batch=8, cache=check.inputs)
        t2 = time.perf_counter()
        run = report.run_report(store, rid)
        report.write_validation(Path(tmp) / "out", run.files)
        cases, summary = run.cases, run.summary
        t3 = time.perf_counter()
        after = model_only()
    model = (before + after) / 2
    total = t3 - t0
    n = len(cases)
    dry = t1 - t0
    stages = dict(clock.total)
    print(f"{summary['n_cases']} cases ({check.summary['usable']} usable), MAE {summary['mae']:.2f} months")
    print(f"  dry run (decode + checks)   {dry:7.1f} s")
    print("    by stage, summed over threads (" + ", ".join(f"{k} {v:.1f} s = {v / n * 1000:.1f} ms/file"
                                                    for k, v in stages.items()) + ")")
    print(f"    manifest checks alone (no images): {checks:.1f} s")
    print(f"    floor on this machine: {floor_per_file * n / WORKERS / 1000:.1f} s (read + hash + one float32 pass per "
          f"file, {floor_per_file:.1f} ms, over {WORKERS} threads)")
    print(f"  ingest + batch run          {t2 - t1:7.1f} s")
    print(f"  analysis + exports          {t3 - t2:7.1f} s")
    print(f"  end to end                  {total:7.1f} s   ({n / total:.1f} cases/s)")
    print(f"  model only, same inputs     {model:7.1f} s   (mean of a run before and after: {before:.1f}, {after:.1f})")
    print(f"  ratio end-to-end / model    {total / model:7.2f}x  (goal 1.2x)")
