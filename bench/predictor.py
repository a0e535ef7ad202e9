"""Predictor throughput against a bare forward pass of the same backbone, and single-case latency.

Prints medians; the ratio compares runs in this same process. No assertions.
"""

from timing import med  # also puts the project on sys.path


import numpy as np
import torch

from kneeage.phantom import render_knee
from kneeage.predict import Predictor


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    pred = Predictor(device="cpu")
    n = 16
    imgs = [render_knee(60 + 8 * i, "F", rng=i, size=512).pixels for i in range(n)]
    inputs = np.stack([pred.prepare(p, "auto") for p in imgs])
    x = torch.from_numpy(inputs)[:, None]
    sexes = ["F"] * n
    folds, flips = len(pred.models), 2
    bare = med(lambda: [m(x, torch.zeros(n)) for m in pred.models for _ in range(flips)])
    full = med(lambda: pred.predict_many(list(inputs), sexes))
    print(f"bare forward ({folds} folds x flip, batch {n}): {n / bare:7.1f} images/s")
    print(f"Predictor.predict_many (same work + QC):    {n / full:7.1f} images/s   overhead {full / bare - 1:+.1%}")
    one = med(lambda: pred.predict(imgs[0], "F", box="auto"))
    print(f"single case, decode-free predict: {one * 1000:7.1f} ms")
    x0 = pred.prepare(imgs[0], "auto")
    with torch.enable_grad():
        for method in ("gradient", "smoothgrad", "gradcam"):
            t = med(lambda: pred.saliency(x0, "F", method), repeats=3)
            print(f"single case saliency {method:10s}: {t * 1000:7.1f} ms")
