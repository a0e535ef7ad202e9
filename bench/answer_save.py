"""Reader-study answer-save latency (issue #8 goal: p95 under 100 ms) with 1, 20 and 50 readers
answering at the same moment against one SQLite database (WAL): in each round every reader loads their
next case, waits at a barrier, then submits; only the submit is timed. "burst": the round ends when all
have saved; "busy": readers go straight on to load their next case, so saves compete with other
sessions' work for the interpreter (as in one Streamlit process). Prints percentiles; no assertions."""

import timing  # noqa: F401 - puts the project on sys.path
from pathlib import Path

import os
import tempfile
import threading
import time

import numpy as np

from kneeage import readerstudy as rs
from kneeage.store import Store

PROTOCOL = {"name": "bench", "seed": 1, "cases": {"sampling": "all"}, "arms": {"unassisted": True, "assisted": False},
            "synthetic": {"n": 40, "seed": 2, "size": 128}}


ROUNDS = 10


def reader_loop(path, code, lat, barrier, busy):
    s = Store(path)
    reader = rs.authenticate(s, code)
    for _ in range(ROUNDS):
        t = rs.next_task(s, reader)
        barrier.wait()
        t0 = time.perf_counter()
        rs.submit(s, reader, t, 100.0, 5.0)
        lat.append(time.perf_counter() - t0)
        if not busy:
            barrier.wait()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ["KNEEAGE_HOME"] = home
        path = Path(home) / "kneeage.db"
        store = Store(path)
        sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
        for n, busy in ((1, False), (20, False), (50, False), (20, True), (50, True)):
            codes = [rs.invite(store, sid, f"R{n}{busy}-{i}") for i in range(n)]
            lat: list[float] = []
            barrier = threading.Barrier(n)
            threads = [threading.Thread(target=reader_loop, args=(path, c, lat, barrier, busy)) for c in codes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ms = np.array(lat) * 1000
            print(f"{n:2d} readers answering at once ({'busy' if busy else 'burst'}), {ms.size} answers: median {np.median(ms):.1f} ms, "
                  f"p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms  (goal p95 < 100 ms)")
