"""Reader-study answer-save latency on SQLite or PostgreSQL (goals: issue #8, p95 under 100 ms with 50
readers; issue #22, p95 under 100 ms with 200 readers answering at once from 4 app processes on
PostgreSQL, and no answer lost or doubled).

Each app process is its own Python process with its own connection pool, as app servers behind the
hospital's proxy are; its readers are threads sharing it, as browser sessions share a Streamlit
process. In each round every reader loads their next case, waits at a barrier shared by all processes,
then submits; only the submit is timed. "burst": the round ends when all have saved; "busy": readers go
straight on to load their next case, so saves compete with other sessions' work. After each scenario
the database is counted: lost = acknowledged answers not stored, doubled = answers stored or audited
more than once. Prints percentiles; no assertions.

Usage: python bench/answer_save.py [--database-url URL] [--rounds 10]
Default database: a new SQLite file in a temporary folder. For PostgreSQL, give an empty database
(`python tests/pg.py start DIR --durable` starts a throwaway server with the default durability).
"""

import timing  # noqa: F401 - puts the project on sys.path

import argparse
import multiprocessing as mp
import os
import tempfile
import threading
import time

import numpy as np
import pandas as pd

from kneeage import readerstudy as rs
from kneeage.store import Store

SCENARIOS = [(1, 1, False), (1, 50, False), (1, 50, True), (4, 200, False), (4, 200, True)]  # processes, readers, busy
CASES = 40


def app_process(url, codes, rounds, barrier, busy, out):
    store = Store(url)
    readers = [rs.authenticate(store, c) for c in codes]
    lat, acks, errors = [], [], []

    def reader_loop(reader):
        try:
            for _ in range(rounds):
                t = rs.next_task(store, reader)
                barrier.wait()
                t0 = time.perf_counter()
                rs.submit(store, reader, t, 100.0 + t.position, 5.0)
                lat.append(time.perf_counter() - t0)
                acks.append((reader["id"], t.position))
                if not busy:
                    barrier.wait()
        except Exception as e:  # noqa: BLE001 - reported by the parent
            errors.append(repr(e))
            barrier.abort()

    threads = [threading.Thread(target=reader_loop, args=(r,)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((lat, acks, errors))


def study(store) -> str:
    """A study over a stored cohort of CASES cases (answering needs no images)."""
    rng = np.random.default_rng(0)
    cases = pd.DataFrame({"case_id": [f"B{i:03d}" for i in range(CASES)], "row": range(2, CASES + 2),
                          "image": [f"images/{i}.dcm" for i in range(CASES)], "sex": ["F", "M"] * (CASES // 2),
                          "chronological_age_months": rng.uniform(12, 200, CASES).round(1),
                          "reference_bone_age_months": rng.uniform(12, 200, CASES).round(1)})
    cid = store.add_cohort(cases, "bench cohort", "bench", "folder:/nowhere", [])
    p = rs.Protocol.from_dict({"name": "bench", "seed": 1, "arms": {"unassisted": True, "assisted": False}})
    return rs.create_study(store, p, cid, None)


def scenario(store, url, sid, processes, n, busy, rounds):
    ctx = mp.get_context("spawn")
    codes = [rs.invite(store, sid, f"R{processes}x{n}{'b' if busy else ''}-{i}") for i in range(n)]
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=app_process, args=(url, codes[k::processes], rounds, barrier, busy, out))
             for k in range(processes)]
    for p in procs:
        p.start()
    got = [out.get() for _ in procs]
    for p in procs:
        p.join()
    lat = np.array([x for g in got for x in g[0]]) * 1000
    acks = {a for g in got for a in g[1]}
    errors = [e for g in got for e in g[2]]
    ids = {c.split("-")[0] for c in codes}
    reads = store.reads(study_id=sid)
    reads = reads[reads.reader_id.isin(ids)]
    stored = set(zip(reads.reader_id, reads.position))
    audit = store.audit_log(sid)
    audit = audit[(audit.action == "read") & audit.actor.isin(ids)]
    doubled = int(reads.duplicated(["reader_id", "position"]).sum() + (reads.revision > 0).sum()
                  + audit.duplicated(["actor", "detail"]).sum())
    where = f"{processes} app process{'es' if processes > 1 else ''}"
    print(f"{where}, {n:3d} readers answering at once ({'busy' if busy else 'burst'}), {lat.size} answers: "
          f"median {np.median(lat):.1f} ms, p95 {np.percentile(lat, 95):.1f} ms, max {lat.max():.1f} ms; "
          f"lost {len(acks - stored)}, doubled {doubled}, errors {len(errors)}  (goal p95 < 100 ms)", flush=True)
    for e in errors[:3]:
        print("   ", e)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--database-url", help="sqlite:///FILE, a file path, or postgresql://… (default: a new SQLite file)")
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["KNEEAGE_HOME"] = home
        store = Store(args.database_url or os.path.join(home, "kneeage.db"))
        print(f"database: {store.label}; {os.cpu_count()} CPUs", flush=True)
        sid = study(store)
        for processes, n, busy in SCENARIOS:
            scenario(store, store.url, sid, processes, n, busy, args.rounds)
