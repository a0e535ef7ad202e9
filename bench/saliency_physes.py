"""Which saliency method points at the physes? A measured criterion for the default map.

    python bench/saliency_physes.py [--model models/demo] [--n 40] [--seed 5] [--record]

Each phantom knee (bone age uniform over 1-17 years, sex alternating, its own random stream, 512 px, read
with the model's own framing at the header's pixel spacing) is explained by every saliency method the
model offers (as the app shows them: fold 0, scaled to [0, 1]). The phantom's truth knows where its
physes run (``PhantomTruth.physes_px``: distal femur, proximal tibia, fibula), so each map is scored by

* **share on the physes**: the share of the map's mass within 5 mm of a physis (``kneeage.saliency``),
  against the share of the input that band covers (a uniform map's score); also at 3 and 8 mm;
* **peak on a physis**: whether the map's maximum lies within 5 mm of a physis ("pointing game");
* **share in the outer fifth**: the mass in the border strip (a fifth of the side) around the input,
  where corners and soft tissue lie.

It prints the mean of each with a 95% bootstrap CI over phantoms, and the paired difference between the
methods. The default is the method with the larger mean share on the physes; ``--record`` writes the
numbers and that choice into the model card (``results.saliency_on_physes``), which the app reads.
Every number is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kneeage import phantom  # noqa: E402
from kneeage.model import load_card, save_card  # noqa: E402
from kneeage.predict import DEFAULT_MODEL_DIR, Predictor  # noqa: E402
from kneeage.saliency import mass_share, physis_mask  # noqa: E402

BANDS_MM = (3.0, 5.0, 8.0)


def _ci(values, n_boot=2000, seed=0):
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    boots = np.random.default_rng(seed).choice(v, (n_boot, v.size)).mean(1)
    return float(v.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def measure(model_dir=DEFAULT_MODEL_DIR, n=40, seed=5, size=512) -> dict:
    pred = Predictor(model_dir)
    S = pred.input_size
    spacing_in = pred.card.config.spacing_mm or 1.0
    methods = list(pred.saliency_methods)
    rng = np.random.default_rng(seed)
    border = np.ones((S, S), bool)
    b = S // 5
    border[b:-b, b:-b] = False
    rows = []
    t0 = time.perf_counter()
    for i in range(n):
        ba = float(rng.uniform(12, 204))
        sex = "F" if i % 2 == 0 else "M"
        ph = phantom.render_knee(ba, sex, rng=np.random.default_rng([seed, i]), size=size)
        framing = pred.frame(ph.pixels, "auto", ph.truth.pixel_spacing_mm)
        x = pred.prepare(ph.pixels, framing=framing)
        masks = {band: physis_mask(ph.truth.physes_px, framing, S, band, spacing_in) for band in BANDS_MM}
        row = {"bone_age_months": ba, "sex": sex, "area_5mm": float(masks[5.0].mean())}
        for m in methods:
            s = pred.saliency(x, sex, m)
            for band in BANDS_MM:
                row[f"{m}_share_{band:g}mm"] = mass_share(s, masks[band])
            row[f"{m}_peak_on_physis"] = float(masks[5.0].flat[int(np.argmax(s))])
            row[f"{m}_border_share"] = mass_share(s, border)
        rows.append(row)
    seconds = time.perf_counter() - t0
    out = {"n": n, "seed": seed, "render_px": size, "band_mm": 5.0, "methods": {}, "seconds": round(seconds, 1),
           "uniform_share_5mm": _ci([r["area_5mm"] for r in rows])}
    for m in methods:
        out["methods"][m] = {
            "share_on_physes_5mm": _ci([r[f"{m}_share_5mm"] for r in rows]),
            "share_on_physes_3mm": _ci([r[f"{m}_share_3mm"] for r in rows]),
            "share_on_physes_8mm": _ci([r[f"{m}_share_8mm"] for r in rows]),
            "enrichment_5mm": _ci([r[f"{m}_share_5mm"] / r["area_5mm"] for r in rows]),
            "peak_on_physis": _ci([r[f"{m}_peak_on_physis"] for r in rows]),
            "border_share": _ci([r[f"{m}_border_share"] for r in rows]),
            "empty_maps": sum(not np.isfinite(r[f"{m}_share_5mm"]) for r in rows),  # no mass: left out of every figure
        }
    pairs = {}
    for a in methods:
        for c in methods:
            if a < c:
                d = [r[f"{a}_share_5mm"] - r[f"{c}_share_5mm"] for r in rows]
                from scipy.stats import wilcoxon

                pairs[f"{a} - {c}"] = {"difference": _ci(d), "wilcoxon_p": float(wilcoxon(d, nan_policy="omit").pvalue)}
    out["paired_share_5mm"] = pairs
    return choose_default(out)


COST = {"gradcam": 8, "gradient": 13, "smoothgrad": 72}  # ms per map on this machine (bench/predictor.py)


def choose_default(out: dict) -> dict:
    """The default: the method with the largest mean share on the physes, or the cheapest method whose paired
    difference from it has a 95% CI that includes zero (no measurable difference)."""
    shares = {m: v["share_on_physes_5mm"][0] for m, v in out["methods"].items()}
    best = max(shares, key=shares.get)

    def ties(m):
        if m == best:
            return True
        d = out["paired_share_5mm"].get(f"{m} - {best}") or out["paired_share_5mm"].get(f"{best} - {m}")
        return d is not None and d["difference"][1] <= 0 <= d["difference"][2]

    out["default"] = min((m for m in shares if ties(m)), key=lambda m: COST.get(m, 1e9))
    out["criterion"] = ("largest mean share of the saliency mass within 5 mm of a physis on phantom knees whose truth gives "
                        "the physes; among methods whose paired difference from the largest has a 95% CI including zero, "
                        "the cheapest (bench/saliency_physes.py)")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--record", action="store_true", help="write the result into the model card")
    args = ap.parse_args()
    r = measure(args.model, args.n, args.seed)
    fmt = lambda t: f"{t[0]:.3f} ({t[1]:.3f}-{t[2]:.3f})"  # noqa: E731
    print(f"{r['n']} phantom knees, seed {r['seed']}, {r['seconds']} s; a uniform map puts "
          f"{fmt(r['uniform_share_5mm'])} of its mass within 5 mm of a physis")
    print(f"{'method':<12} {'share 5 mm':>22} {'share 3 mm':>22} {'share 8 mm':>22} {'enrichment':>22} "
          f"{'peak on physis':>22} {'outer fifth':>22}")
    for m, v in r["methods"].items():
        print(f"{m:<12} " + " ".join(f"{fmt(v[k]):>22}" for k in ("share_on_physes_5mm", "share_on_physes_3mm",
                                                                  "share_on_physes_8mm", "enrichment_5mm",
                                                                  "peak_on_physis", "border_share"))
              + (f"  ({v['empty_maps']} empty maps left out)" if v["empty_maps"] else ""))
    for k, v in r["paired_share_5mm"].items():
        print(f"paired {k}: {fmt(v['difference'])}, Wilcoxon p {v['wilcoxon_p']:.2g}")
    print(f"default: {r['default']}")
    print(json.dumps(r))
    if args.record:
        card = load_card(Path(args.model))
        card.results["saliency_on_physes"] = r
        save_card(card, Path(args.model))
        print(f"recorded in {Path(args.model) / 'model_card.json'}")


if __name__ == "__main__":
    main()
