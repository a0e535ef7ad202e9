"""Reader studies: protocols, invitations, randomised worklists, the reading room's data, analysis.

Protocol (TOML, ``studies/*.toml``, or a dict):

    name = "Demo reader study"
    seed = 2026
    [cases]        sampling = "all" | "random" | "stratified"; n = 24 (random/stratified)
    [arms]         unassisted = true; assisted = true; repeats = 4 (cases re-read, unassisted, at the end)
    [design]       order = "crossover" | "unassisted_first"; washout_days = 0
    [display]      show_sex = true; show_age = true; allow_changes = false
    [access]       code_days = 30
    [synthetic]    n = 24; seed = 7          (optional: render a synthetic cohort for a demo)

Each reader's worklist is the sampled cases in an order shuffled with a seed derived from the study
seed and the reader's id (recorded, so the order can be rebuilt). With ``crossover`` half the readers
(alternating by invitation) read the assisted arm first; the second arm opens ``washout_days`` after
the reader's first answer. Reads never expose the reference; the unassisted arm never exposes the model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from . import mrmc, stats
from .access import AccessError, check_not_locked, record_failure, scrypt_hash
from .errors import InputError
from .store import Store, now

SHIPPED = Path(__file__).resolve().parents[1] / "studies"  # protocols shipped with the project
ARMS = ("unassisted", "assisted")


@dataclass(frozen=True)
class Protocol:
    name: str
    seed: int = 2026
    sampling: str = "all"
    n: int | None = None
    unassisted: bool = True
    assisted: bool = True
    repeats: int = 0
    order: str = "crossover"
    washout_days: float = 0
    show_sex: bool = True
    show_age: bool = True
    allow_changes: bool = False
    code_days: int = 30
    synthetic: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        flat = {"name": d.get("name", "Reader study"), "seed": d.get("seed", 2026), "synthetic": d.get("synthetic", {})}
        for section in ("cases", "arms", "design", "display", "access"):
            flat.update(d.get(section, {}))
        known = set(cls.__dataclass_fields__)
        unknown = set(flat) - known
        if unknown:
            raise InputError(f"protocol {flat['name']!r}: unknown setting {sorted(unknown)[0]!r}.")
        p = cls(**flat)
        if p.sampling not in ("all", "random", "stratified"):
            raise InputError(f"protocol {p.name!r}: sampling must be all, random or stratified, not {p.sampling!r}.")
        if p.order not in ("crossover", "unassisted_first"):
            raise InputError(f"protocol {p.name!r}: order must be crossover or unassisted_first, not {p.order!r}.")
        if not (p.unassisted or p.assisted):
            raise InputError(f"protocol {p.name!r}: choose at least one arm.")
        return p

    @classmethod
    def load(cls, path: str | Path) -> "Protocol":
        try:
            return cls.from_dict(tomllib.loads(Path(path).read_text()))
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{Path(path).name}: not valid TOML ({e}).") from None

    @property
    def arms(self) -> list[str]:
        return [a for a in ARMS if getattr(self, a)]


# ------------------------------------------------------------------------------- set-up (PI)


def sample_cases(cases: pd.DataFrame, p: Protocol) -> list[str]:
    """The study's cases: all, a random sample, or a sample stratified by sex × age band (seeded)."""
    cases = cases[cases.reference_bone_age_months.notna()] if "reference_bone_age_months" in cases else cases
    ids = cases.case_id.tolist()
    rng = np.random.default_rng(p.seed)
    if p.sampling == "all" or not p.n or p.n >= len(ids):
        return ids
    if p.sampling == "random":
        return sorted(rng.choice(ids, p.n, replace=False).tolist())
    strata = cases.assign(stratum=cases.sex.astype(str) + "/" + stats.age_band(cases.chronological_age_months).astype(str))
    groups = {k: g.case_id.tolist() for k, g in strata.groupby("stratum")}
    share = {k: len(v) / len(cases) for k, v in groups.items()}
    take = {k: int(np.floor(p.n * s)) for k, s in share.items()}
    for k in sorted(groups, key=lambda k: -(p.n * share[k] - take[k]))[: p.n - sum(take.values())]:
        take[k] += 1
    return sorted(x for k, v in groups.items() for x in rng.choice(v, min(take[k], len(v)), replace=False).tolist())


def create_study(store: Store, protocol: Protocol, cohort_id: str, run_id: str | None) -> str:
    """A study over a stored cohort; ``run_id`` (a validation run of the model on that cohort) supplies
    the model's estimates for the assisted arm."""
    if protocol.assisted and not run_id:
        raise InputError(f"protocol {protocol.name!r}: the assisted arm needs a model run on the cohort.")
    cases = store.cases(cohort_id)
    chosen = sample_cases(cases, protocol)
    if not chosen:
        raise InputError(f"protocol {protocol.name!r}: the cohort has no cases with a reference bone age.")
    sid = secrets.token_hex(4)
    store.add_study({"id": sid, "name": protocol.name, "cohort_id": cohort_id, "run_id": run_id,
                     "protocol": json.dumps(protocol.__dict__ | {"case_ids": chosen}), "seed": protocol.seed,
                     "created": now()})
    return sid


def study_protocol(store: Store, study_id: str) -> tuple[Protocol, list[str]]:
    d = json.loads(store.study_protocol_json(study_id))
    ids = d.pop("case_ids")
    return Protocol(**d), ids


def reader_order(protocol: Protocol, case_ids: list[str], reader_id: str, index: int) -> list[dict]:
    """A reader's worklist: per arm the cases in a seeded random order; repeats at the end."""
    seed = int(hashlib.sha256(f"{protocol.seed}:{reader_id}".encode()).hexdigest()[:12], 16)
    rng = np.random.default_rng(seed)
    arms = protocol.arms
    if protocol.order == "crossover" and index % 2 == 1:
        arms = arms[::-1]
    items = []
    for session, arm in enumerate(arms):
        for cid in rng.permutation(case_ids).tolist():
            items.append({"case_id": cid, "arm": arm, "repeat": 0, "session": session})
    if protocol.repeats:
        again = rng.choice(case_ids, min(protocol.repeats, len(case_ids)), replace=False).tolist()
        items += [{"case_id": c, "arm": "unassisted" if protocol.unassisted else "assisted", "repeat": 1,
                   "session": len(arms) - 1} for c in again]
    return [it | {"position": k, "reader_id": reader_id} for k, it in enumerate(items)]


CODE_COST = 2**12  # scrypt cost of reader codes (72 random bits each)


def _new_code(protocol: Protocol, rid: str) -> tuple[str, dict]:
    """A personal access code and the columns that store it (hash, salt, expiry; never the code)."""
    secret, salt = secrets.token_urlsafe(9), secrets.token_hex(16)
    expires = (datetime.now(timezone.utc) + timedelta(days=protocol.code_days)).isoformat(timespec="seconds")
    return f"{rid}-{secret}", {"code_hash": scrypt_hash(secret, salt, CODE_COST), "salt": salt, "expires": expires}


def invite(store: Store, study_id: str, name: str, role: str = "reader") -> str:
    """Create a reader and return their personal access code (shown once; only its hash is kept)."""
    protocol, case_ids = study_protocol(store, study_id)
    rid = secrets.token_hex(3).upper()
    code, stored = _new_code(protocol, rid)
    index = len(store.readers(study_id))
    store.add_reader({"id": rid, "study_id": study_id, "name": name.strip() or f"Reader {index + 1}", "role": role,
                      "created": now(), "revoked": 0} | stored,
                     [it | {"study_id": study_id} for it in reader_order(protocol, case_ids, rid, index)])
    return code


def _reader_of(store: Store, study_id: str, reader_id: str) -> dict:
    r = store.reader(str(reader_id).strip().upper())
    if r is None or r["study_id"] != study_id:
        raise InputError(f"reader {reader_id!r} is not in study {study_id}.")
    return r


def revoke(store: Store, study_id: str, reader_id: str) -> None:
    """Withdraw a reader's code: their open session stops at its next request; their answers are kept."""
    store.revoke(_reader_of(store, study_id, reader_id)["id"])


def reissue(store: Store, study_id: str, reader_id: str) -> str:
    """A new code for the same reader and worklist (e.g. a lost or leaked code); the old code and any
    session opened with it stop working. Returns the new code (shown once)."""
    r = _reader_of(store, study_id, reader_id)
    protocol, _ = study_protocol(store, study_id)
    code, stored = _new_code(protocol, r["id"])
    store.reissue(r["id"], **stored)
    return code


def authenticate(store: Store, code: str, clients: tuple[str, ...] = (), clock=time.time) -> dict:
    """The reader a code belongs to; refuses bad, expired or revoked codes. Wrong codes count against the
    client and the code's reader (see :mod:`kneeage.access` for the lock-out rules)."""
    rid, _, secret = str(code).strip().partition("-")
    rid = rid.upper()
    check_not_locked(store, f"reader:{rid}", clients, clock)
    r = store.reader(rid) if rid else None
    if r is None or not secret or not hmac.compare_digest(scrypt_hash(secret, r["salt"], CODE_COST), r["code_hash"]):
        record_failure(store, f"reader:{rid}", clients, clock)
        raise AccessError("This access code is not valid.")
    reader = {k: r[k] for k in ("id", "study_id", "name", "role")} | {"code": r["code_hash"][:16]}
    check_standing(store, reader)
    return reader


def check_standing(store: Store, reader: dict, position: int | None = None) -> dict | None:
    """Refuse a signed-in reader whose code was since revoked, re-issued or has expired (every request).
    With a ``position``, return that item of the reader's own worklist (None if there is none), read in the
    same query."""
    row = store.reader_standing(reader["id"], position)
    if row is None or row["revoked"]:
        raise AccessError("This access code has been withdrawn by the study PI.")
    if row["code_hash"][:16] != reader.get("code"):
        raise AccessError("This access code has been replaced by a new one; use the code the study PI gave you last.")
    if datetime.fromisoformat(row["expires"]) < datetime.now(timezone.utc):
        raise AccessError("This access code has expired; ask the study PI for a new one.")
    if position is None or row["case_id"] is None:
        return None
    return {k: row[k] for k in ("case_id", "arm", "repeat")}


# --------------------------------------------------------------------------- reading (reader)


@dataclass(frozen=True)
class Task:
    """What the reading room may show for one worklist item — never the reference."""

    position: int
    case_id: str
    arm: str
    repeat: bool
    sex: str | None
    chronological_age_months: float | None
    model_estimate_months: float | None  # only in the assisted arm
    done: int
    total: int


def progress(store: Store, reader: dict) -> tuple[int, int]:
    done, total, _, _ = store.reader_progress(reader["id"])
    return done, total


def next_task(store: Store, reader: dict, now: datetime | None = None) -> Task | str:
    """The reader's next unanswered item, or a sentence saying why there is none (plain SQL: this runs
    on every page view of every reader)."""
    check_standing(store, reader)
    protocol, _ = study_protocol(store, reader["study_id"])
    done, total, item, first = store.reader_progress(reader["id"])
    if item is None:
        return "All cases are read. Thank you!"
    if item["session"] > 0 and protocol.washout_days and first:
        opens = datetime.fromisoformat(first) + timedelta(days=protocol.washout_days)
        if (now or datetime.now(timezone.utc)) < opens:
            return f"The next session opens on {opens:%Y-%m-%d %H:%M} UTC, after the {protocol.washout_days:g}-day washout."
    return _task(store, reader, protocol, item, done, total)


def revisit(store: Store, reader: dict, position: int) -> Task:
    """An answered item of the reader's own worklist, to change its answer (only if the protocol allows)."""
    check_standing(store, reader)
    protocol, _ = study_protocol(store, reader["study_id"])
    if not protocol.allow_changes:
        raise AccessError("This study does not allow changing submitted answers.")
    item = store.worklist_item(reader["id"], position)
    answered = store.reads(reader_id=reader["id"])
    if item is None or not len(answered) or position not in set(answered.position):
        raise AccessError("Only your own answered cases can be changed.")
    done, total, _, _ = store.reader_progress(reader["id"])
    return _task(store, reader, protocol, item | {"position": position}, done, total)


def _task(store: Store, reader: dict, protocol: Protocol, item: dict, done: int, total: int) -> Task:
    study = store.study(reader["study_id"])
    case = store.case_facts(study["cohort_id"], item["case_id"])
    model = store.predicted(study["run_id"], item["case_id"]) if item["arm"] == "assisted" and study["run_id"] else None
    age = case["chronological_age_months"]
    return Task(int(item["position"]), item["case_id"], item["arm"], bool(item["repeat"]),
                case["sex"] if protocol.show_sex else None,
                float(age) if protocol.show_age and age is not None else None, model, done, total)


def task_image(store: Store, reader: dict, task: Task):
    """The radiograph for a task (a Radiograph), read from the cohort's stored image source."""
    from .cohort import open_source
    from .imaging import load_radiograph

    check_standing(store, reader)
    study = store.study(reader["study_id"])
    cohort = store.cohort(study["cohort_id"])
    image = store.case_facts(study["cohort_id"], task.case_id)["image"]
    return load_radiograph(open_source(cohort["source"]).read(image), name=task.case_id)


def submit(store: Store, reader: dict, task: Task, estimate_months: float | None, seconds: float,
           confidence: int | None = None, unreadable_reason: str | None = None) -> str:
    """Save one answer at once. Estimates must lie in 0-240 months; an unreadable case needs a reason."""
    mine = check_standing(store, reader, task.position)
    allow_changes = json.loads(store.study_protocol_json(reader["study_id"])).get("allow_changes", False)
    unreadable = bool(unreadable_reason and unreadable_reason.strip())
    if not unreadable:
        if estimate_months is None or not np.isfinite(estimate_months) or not 0 <= estimate_months <= 240:
            raise InputError(f"case {task.case_id}: the estimate must lie between 0 and 240 months (0-20 years).")
    if confidence is not None and not 1 <= confidence <= 5:
        raise InputError(f"case {task.case_id}: confidence must be 1 to 5.")
    if mine is None or mine["case_id"] != task.case_id:
        raise AccessError("This case is not on your worklist.")
    row = {"reader_id": reader["id"], "position": task.position, "study_id": reader["study_id"], "case_id": task.case_id,
           "arm": mine["arm"], "repeat": int(mine["repeat"]),
           "estimate_months": None if unreadable else float(estimate_months), "confidence": confidence,
           "unreadable": int(unreadable), "reason": unreadable_reason.strip() if unreadable else None,
           "seconds": float(seconds), "shown_model_months": task.model_estimate_months, "submitted": now()}
    result = store.save_read(row, allow_changes)
    if result == "locked":
        raise AccessError(f"case {task.case_id}: your answer was already submitted and this study does not allow changes.")
    return result


# ----------------------------------------------------------------------------- analysis (PI)


def reads_table(store: Store, study_id: str) -> pd.DataFrame:
    """All reads, long format, with reference, model estimate and reader name (the PI's export)."""
    study = store.study(study_id)
    reads = store.reads(study_id=study_id)
    if not len(reads):
        return pd.DataFrame(columns=["reader_id", "reader", "case_id", "arm", "repeat", "estimate_months",
                                     "reference_bone_age_months", "model_months", "seconds"])
    cases = store.cases(study["cohort_id"])[["case_id", "sex", "chronological_age_months", "reference_bone_age_months"]]
    names = store.readers(study_id).set_index("id").name
    df = reads.merge(cases, on="case_id", how="left")
    df["reader"] = df.reader_id.map(names)
    if study["run_id"]:
        res = store.results(study["run_id"]).set_index("case_id").predicted_bone_age_months
        df["model_months"] = df.case_id.map(res)
    else:
        df["model_months"] = np.nan
    return df


def _boot_pairs(a: pd.DataFrame, n_boot: int, seed: int) -> tuple[float, tuple[float, float]]:
    """Assisted minus unassisted MAE pooled over readers, with a bootstrap over both readers and cases
    (two-stage: resample readers, then cases, each with replacement; percentile CI)."""
    rng = np.random.default_rng(seed)
    readers = a.reader_id.unique()
    cases = a.case_id.unique()
    piv = a.pivot_table(index="case_id", columns="reader_id", values="diff")
    est = float(np.nanmean(piv.to_numpy()))
    boots = []
    for _ in range(n_boot):
        r = rng.choice(readers, readers.size)
        c = rng.choice(cases, cases.size)
        boots.append(np.nanmean(piv.loc[c, r].to_numpy()))
    lo, hi = np.nanquantile(boots, [0.025, 0.975])
    return est, (float(lo), float(hi))


def analyse(store: Store, study_id: str, n_boot: int = 1000, reads: pd.DataFrame | None = None) -> dict:
    """The PI dashboard's analysis, all from kneeage.stats on :func:`reads_table` (pass it if you have it)."""
    from . import growth

    df = reads_table(store, study_id) if reads is None else reads
    ok = df[(df.unreadable == 0) & df.estimate_months.notna() & df.reference_bone_age_months.notna()] if len(df) else df
    out: dict = {"n_reads": int(len(df)), "n_unreadable": int(df.unreadable.sum()) if len(df) else 0, "readers": []}
    first = ok[ok["repeat"] == 0] if len(ok) else ok
    for rid, g in first.groupby("reader_id") if len(first) else []:
        entry = {"reader_id": rid, "reader": g.reader.iloc[0], "n": int(len(g)),
                 "median_seconds": float(g.seconds.median())}
        for arm, ga in g.groupby("arm"):
            if len(ga) >= 3:
                es = stats.error_summary(ga.estimate_months, ga.reference_bone_age_months, n_boot=n_boot)
                ba = stats.bland_altman(ga.estimate_months, ga.reference_bone_age_months)
                entry[arm] = {"n": es.n, "mae": es.mae, "mae_ci": list(es.mae_ci), "bias": es.bias,
                              "loa": [ba.loa_lower, ba.loa_upper],
                              "clinical": growth.clinical_view(ga, predicted="estimate_months")}  # issue #20
                m = ga[ga.model_months.notna()]
                if len(m) >= 3:
                    c = stats.compare_errors(m.estimate_months, m.model_months, m.reference_bone_age_months, n_boot=n_boot)
                    entry[arm]["minus_model"] = {"mae_model": c.mae_b, "difference": c.mae_difference,
                                                 "ci": list(c.mae_difference_ci), "wilcoxon_p": c.wilcoxon_p}
        out["readers"].append(entry)
    if len(first):
        un = first[first.arm == "unassisted"] if "unassisted" in set(first.arm) else first
        model = first.drop_duplicates("case_id")
        model = model[model.model_months.notna()]
        if len(model) >= 3:
            es = stats.error_summary(model.model_months, model.reference_bone_age_months, n_boot=n_boot)
            out["model"] = {"n": es.n, "mae": es.mae, "mae_ci": list(es.mae_ci), "bias": es.bias,
                            "clinical": growth.clinical_view(model, predicted="model_months")}  # issue #20
        pooled_ba = stats.bland_altman(first.estimate_months, first.reference_bone_age_months) if len(first) >= 3 else None
        if pooled_ba:
            out["pooled_bland_altman"] = {k: pooled_ba[k] for k in ("n", "bias", "sd", "loa_lower", "loa_upper")}
        complete = un.groupby("case_id").reader_id.nunique()
        readers_n = un.reader_id.nunique()
        full = un[un.case_id.isin(complete[complete == readers_n].index)]
        if readers_n >= 2 and full.case_id.nunique() >= 3:
            icc = stats.icc(full, "case_id", "reader_id", "estimate_months")
            out["inter_reader_icc"] = icc.loc[["ICC2", "ICC2k"]].drop(columns=["type"]).reset_index().to_dict("records")
    rep = ok[ok["repeat"] == 1] if len(ok) else ok
    if len(rep):
        intra = []
        for rid, g in rep.groupby("reader_id"):
            base = first[(first.reader_id == rid) & (first.arm == g.arm.iloc[0]) & first.case_id.isin(g.case_id)]
            pair = base.merge(g, on="case_id", suffixes=("_1", "_2"))
            if len(pair) >= 3:
                ba = stats.bland_altman(pair.estimate_months_2, pair.estimate_months_1)
                long = pd.concat([pair[["case_id"]].assign(read="1", v=pair.estimate_months_1),
                                  pair[["case_id"]].assign(read="2", v=pair.estimate_months_2)])
                icc1 = float(stats.icc(long, "case_id", "read", "v").loc["ICC1", "icc"])
                intra.append({"reader_id": rid, "n": len(pair), "bias": ba.bias, "loa": [ba.loa_lower, ba.loa_upper],
                              "icc1": icc1})
        out["intra_reader"] = intra
    if len(first) and {"assisted", "unassisted"} <= set(first.arm):
        piv = first.pivot_table(index=["reader_id", "case_id"], columns="arm", values="estimate_months").dropna()
        if len(piv) >= 3:
            t = piv.reset_index().merge(first.drop_duplicates("case_id")[["case_id", "reference_bone_age_months", "model_months"]],
                                        on="case_id")
            t["diff"] = (t.assisted - t.reference_bone_age_months).abs() - (t.unassisted - t.reference_bone_age_months).abs()
            est, ci = _boot_pairs(t, n_boot, 0)
            per = {rid: stats.compare_errors(g.assisted, g.unassisted, g.reference_bone_age_months, n_boot=n_boot).as_dict()
                   for rid, g in t.groupby("reader_id") if len(g) >= 3}
            m = t[t.model_months.notna()]
            moved = float(np.mean((m.assisted - m.model_months).abs() < (m.unassisted - m.model_months).abs())) if len(m) else None
            out["assisted_vs_unassisted"] = {"label": "sensitivity analysis (bootstrap)",  # primary: out["orh"]
                                             "pooled_mae_difference": est, "ci": list(ci), "per_reader": per,
                                             "share_moved_toward_model": moved, "n_pairs": int(len(t))}
    out["orh"] = mrmc.study_analysis(first)  # issue #21: the primary reader-study analysis (ORH MRMC)
    return json.loads(json.dumps(out, default=float))


def setup_study(store: Store, protocol: Protocol, predictor=None, cohort_id: str | None = None) -> str:
    """Create a study from a protocol: over a stored cohort, or over a synthetic cohort rendered from the
    protocol's ``[synthetic]`` section. When the assisted arm is on, the model is run on the cohort
    first (resuming an existing run of the same model)."""
    from . import validation
    from .cohort import FolderSource, check_cohort, open_source, read_manifest
    from .phantom import write_cohort
    from .store import home

    if cohort_id is None:
        if not protocol.synthetic:
            raise InputError(f"protocol {protocol.name!r}: give a cohort, or a [synthetic] section for a demo cohort.")
        n, seed = int(protocol.synthetic.get("n", 24)), int(protocol.synthetic.get("seed", 7))
        folder = home() / "cohorts" / f"synthetic-{seed}-{n}"
        if not (folder / "manifest.csv").exists():
            write_cohort(folder, n, seed=seed, size=int(protocol.synthetic.get("size", 384)))
        source = FolderSource(folder)
        check = check_cohort(read_manifest(folder / "manifest.csv"), source, input_size=None)
        cohort_id = validation.ingest(store, check, f"synthetic demo cohort (seed {seed})", "synthetic", source)
    run_id = None
    if protocol.assisted:
        if predictor is None:
            from .predict import Predictor

            predictor = Predictor()
        run_id = validation.run_model(store, cohort_id, predictor, open_source(store.cohort(cohort_id)["source"]))
    return create_study(store, protocol, cohort_id, run_id)
