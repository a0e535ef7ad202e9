"""Render time per phantom image at 512 and 1024 px (median of repeats). Prints numbers only."""

import timing  # noqa: F401 - puts the project on sys.path


import statistics
import time

from kneeage.phantom import render_hand, render_knee


def median_seconds(fn, repeats=7):
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


if __name__ == "__main__":
    for size in (512, 1024):
        k = median_seconds(lambda i: render_knee(100 + i, "F", rng=i, size=size))
        h = median_seconds(lambda i: render_hand(100 + i, "F", rng=i, size=size))
        print(f"{size:5d} px  knee {k * 1000:7.1f} ms/image   hand {h * 1000:7.1f} ms/image")
