"""Type-I error and power of the ORH test (kneeage.mrmc) on simulated bone-age reader studies (issue #21).

Each simulated study: J readers read the same K cases unassisted and assisted (factorial). A read is
    estimate = truth + reader bias + reader×arm bias + s_arm·(case difficulty + reader×case + arm×case + noise)
with reader bias ~ N(0, 3²), reader×arm ~ N(0, 1²), case difficulty ~ N(0, 4²), reader×case ~ N(0, 3²),
arm×case ~ N(0, 2²), noise ~ N(0, 5²) months. Under H0 both arms have s = 1 (no assisted effect); under
H1 the assisted arm has s = ``--effect`` (0.8: errors 20% smaller). The figure of merit is the MAE.
The ORH test (random readers and cases, jackknife, Hillis df) rejects at α = 0.05.

Prints the rejection rate under H0 (nominal 0.05) with its Monte Carlo SE, and under H1 (power); no
assertions. Usage: python bench/mrmc_type1.py [--sims 2000] [--readers 5] [--cases 60] [--effect 0.8]
"""

import timing  # noqa: F401 - puts the project on sys.path

import argparse
import time

import numpy as np

from kneeage import mrmc


def simulate(rng, readers: int, cases: int, scale_assisted: float) -> tuple[np.ndarray, np.ndarray]:
    truth = rng.uniform(0, 216, cases)
    bias = rng.normal(0, 3, (1, readers, 1)) + rng.normal(0, 1, (2, readers, 1))
    shared = rng.normal(0, 4, (1, 1, cases)) + rng.normal(0, 3, (1, readers, cases)) + rng.normal(0, 2, (2, 1, cases))
    noise = rng.normal(0, 5, (2, readers, cases))
    scale = np.array([scale_assisted, 1.0])[:, None, None]  # conditions: assisted, unassisted
    return truth, truth + bias + scale * (shared + noise)


def rejection_rate(sims: int, readers: int, cases: int, scale: float, seed: int, alpha: float = 0.05):
    rng = np.random.default_rng(seed)
    p = np.empty(sims)
    for i in range(sims):
        truth, ratings = simulate(rng, readers, cases, scale)
        p[i] = mrmc.orh_arrays(truth, ratings, "mae", conditions=["assisted", "unassisted"]).global_test.p
    rate = float(np.mean(p < alpha))
    return rate, float(np.sqrt(rate * (1 - rate) / sims))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sims", type=int, default=2000)
    ap.add_argument("--readers", type=int, default=5)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--effect", type=float, default=0.8, help="assisted error scale under H1")
    ap.add_argument("--seed", type=int, default=2021)
    a = ap.parse_args()
    t = time.perf_counter()
    r0, se0 = rejection_rate(a.sims, a.readers, a.cases, 1.0, a.seed)
    print(f"H0 (no assisted effect): ORH rejection rate {r0:.4f} ± {se0:.4f} (Monte Carlo SE) over {a.sims} simulated "
          f"studies of {a.readers} readers × {a.cases} cases; nominal 0.05")
    r1, se1 = rejection_rate(a.sims, a.readers, a.cases, a.effect, a.seed + 1)
    print(f"H1 (assisted errors ×{a.effect:g}): ORH rejection rate (power) {r1:.4f} ± {se1:.4f}")
    print(f"{time.perf_counter() - t:.1f} s")


if __name__ == "__main__":
    main()
