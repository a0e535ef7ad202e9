"""Reader-study answer-save latency (issue #8 goal: p95 under 100 ms), with 1 and 20 concurrent readers
writing to one SQLite database (WAL). Prints percentiles; no assertions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

import os  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from kneeage import readerstudy as rs  # noqa: E402
from kneeage.store import Store  # noqa: E402

PROTOCOL = {"name": "bench", "seed": 1, "cases": {"sampling": "all"}, "arms": {"unassisted": True, "assisted": False},
            "synthetic": {"n": 40, "seed": 2, "size": 128}}


def reader_loop(path, code, lat):
    s = Store(path)
    reader = rs.authenticate(s, code)
    while not isinstance(t := rs.next_task(s, reader), str):
        t0 = time.perf_counter()
        rs.submit(s, reader, t, 100.0, 5.0)
        lat.append(time.perf_counter() - t0)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as home:
        os.environ["KNEEAGE_HOME"] = home
        path = Path(home) / "kneeage.db"
        store = Store(path)
        sid = rs.setup_study(store, rs.Protocol.from_dict(PROTOCOL))
        for n in (1, 20):
            codes = [rs.invite(store, sid, f"R{n}-{i}") for i in range(n)]
            lat: list[float] = []
            threads = [threading.Thread(target=reader_loop, args=(path, c, lat)) for c in codes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ms = np.array(lat) * 1000
            print(f"{n:2d} concurrent readers, {ms.size} answers: median {np.median(ms):.1f} ms, "
                  f"p95 {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms  (goal p95 < 100 ms)")
