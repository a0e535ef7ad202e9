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

from . import growth, mrmc, stats, validation
from .access import AccessError, attempt, fingerprint, matches, scrypt_hash, sign, verify
from .cohort import FolderSource, check_cohort, open_source, read_case, read_manifest
from .config import SHIPPED_STUDIES, home
from .conventions import MAX_AGE_MONTHS
from .errors import InputError
from .phantom import write_cohort
from .predict import Predictor
from .store import Store, now
SHIPPED = SHIPPED_STUDIES  # protocols shipped with the project
ARMS = ("unassisted", "assisted")
# The reader's optional confidence, 1-5, with its anchors (shown on the scale and in the exports).
CONFIDENCE = {1: "1 · a guess", 2: "2 · unsure", 3: "3 · fairly sure", 4: "4 · confident", 5: "5 · certain"}


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


CODE_COST = 2**12  # scrypt cost of reader codes (74 random bits each)
# Reader ids and codes use 30 characters that cannot be mistaken for one another when read aloud or typed
# from a printout: no 0/O, 1/I/L, or U; case does not matter.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_GROUPS = 3  # the secret: three groups of five characters (15 × log2(30) ≈ 74 bits)


def _random_text(n: int) -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(n))


def _new_code(protocol: Protocol, rid: str) -> tuple[str, dict]:
    """A personal access code ("RID-XXXXX-XXXXX-XXXXX") and the columns that store it (hash, salt, expiry;
    never the code)."""
    secret, salt = _random_text(5 * CODE_GROUPS), secrets.token_hex(16)
    shown = "-".join(secret[i : i + 5] for i in range(0, len(secret), 5))
    expires = (datetime.now(timezone.utc) + timedelta(days=protocol.code_days)).isoformat(timespec="seconds")
    return f"{rid}-{shown}", {"code_hash": scrypt_hash(secret, salt, CODE_COST), "salt": salt, "expires": expires}


def _secret_forms(secret: str) -> list[str]:
    """What a typed secret may be hashed as: as typed (codes issued before release 18 were case-sensitive),
    then without spaces and dashes, upper-case."""
    clean = "".join(secret.split()).replace("-", "").upper()
    return [secret] if clean == secret else [secret, clean]


def invite(store: Store, study_id: str, name: str, role: str = "reader") -> str:
    """Create a reader and return their personal access code (shown once; only its hash is kept)."""
    protocol, case_ids = study_protocol(store, study_id)
    rid = _random_text(6)
    while store.reader(rid) is not None:  # ids are short; never reuse one
        rid = _random_text(6)
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
    rid = rid.strip().upper()
    r = store.reader(rid) if rid else None
    attempt(store, f"reader:{rid}", clients, lambda: r is not None and bool(secret) and any(
        matches(s, r["salt"], r["code_hash"], CODE_COST) for s in _secret_forms(secret.strip())),
        "This access code is not valid.", clock)
    reader = {k: r[k] for k in ("id", "study_id", "name", "role")} | {"code": r["code_hash"][:16]}
    check_standing(store, reader)
    return reader


def session_token(store: Store, reader: dict) -> str:
    """A signed token that keeps this reader signed in across page reloads for a reading session
    (:data:`kneeage.access.SESSION_HOURS`), never longer than the code's own validity. It carries the reader
    id and a keyed fingerprint of the code, not the code: a revoked, re-issued or expired code ends it."""
    r = store.reader(reader["id"])
    return sign({"r": r["id"], "f": fingerprint(r["code_hash"])})


def reader_from_token(store: Store, token: str | None) -> dict | None:
    """The signed-in reader a session token stands for (checked like every request: revoked, re-issued or
    expired codes are refused with AccessError), or None for a token that is not valid or has expired."""
    payload = verify(token)
    r = store.reader(str(payload.get("r", ""))) if payload else None
    if r is None or not hmac.compare_digest(str(payload.get("f", "")), fingerprint(r["code_hash"])):
        if r is not None:  # the code was re-issued since: say so, as for an open session
            raise AccessError("This access code has been replaced by a new one; use the code the study PI gave you last.")
        return None
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
    check_standing(store, reader)
    study = store.study(reader["study_id"])
    cohort = store.cohort(study["cohort_id"])
    image = store.case_facts(study["cohort_id"], task.case_id)["image"]
    return read_case(open_source(cohort["source"]), image).radiograph


def submit(store: Store, reader: dict, task: Task, estimate_months: float | None, seconds: float,
           confidence: int | None = None, unreadable_reason: str | None = None) -> str:
    """Save one answer at once. Estimates must lie in 0-240 months (MAX_AGE_MONTHS); an unreadable case needs a reason."""
    allow_changes = json.loads(store.study_protocol_json(reader["study_id"])).get("allow_changes", False)
    unreadable = bool(unreadable_reason and unreadable_reason.strip())
    if not unreadable:
        if estimate_months is None or not np.isfinite(estimate_months) or not 0 <= estimate_months <= MAX_AGE_MONTHS:
            raise InputError(f"case {task.case_id}: the estimate must lie between 0 and {MAX_AGE_MONTHS:.0f} months "
                             f"(0-{MAX_AGE_MONTHS / 12:.0f} years).")
    if confidence is not None and not 1 <= confidence <= 5:
        raise InputError(f"case {task.case_id}: confidence must be 1 to 5.")
    row = {"reader_id": reader["id"], "position": task.position, "study_id": reader["study_id"], "case_id": task.case_id,
           "estimate_months": None if unreadable else float(estimate_months), "confidence": confidence,
           "unreadable": int(unreadable), "reason": unreadable_reason.strip() if unreadable else None,
           "seconds": float(seconds), "shown_model_months": task.model_estimate_months, "submitted": now()}
    # the store checks the reader's standing and worklist in the saving statement itself (one round trip on
    # PostgreSQL); only an answer it did not save needs the checks again, to say why
    result = store.save_read(row, allow_changes, reader.get("code"))
    if result is None:
        mine = check_standing(store, reader, task.position)
        if mine is None or mine["case_id"] != task.case_id:
            raise AccessError("This case is not on your worklist.")
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


@dataclass(frozen=True)
class StudyAnalysis:
    """The PI dashboard's analysis of a reader study. A part that needs more reads than there are is None
    (:func:`why_missing` says why); :meth:`as_dict` is analysis.json."""

    n_reads: int
    n_unreadable: int
    readers: tuple  # per reader: n, median seconds, and per arm MAE (CI), bias, limits, clinical view, minus the model
    orh: dict  # the primary analysis: Obuchowski-Rockette-Hillis MRMC (kneeage.mrmc)
    model: dict | None = None  # the model on the same cases
    pooled_bland_altman: dict | None = None  # all first reads against the reference
    inter_reader_icc: tuple | None = None  # ICC(A,1) and ICC(A,k) of the unassisted reads
    intra_reader: tuple | None = None  # per reader: repeat reads against first reads
    assisted_vs_unassisted: dict | None = None  # the sensitivity analysis: bootstrap over readers and cases

    def as_dict(self) -> dict:
        keys = ("n_reads", "n_unreadable", "readers", "model", "pooled_bland_altman", "inter_reader_icc", "intra_reader",
                "assisted_vs_unassisted", "orh")
        return stats.json_ready({k: getattr(self, k) for k in keys if getattr(self, k) is not None})


def analyse(store: Store, study_id: str, n_boot: int = 1000, reads: pd.DataFrame | None = None) -> StudyAnalysis:
    """The PI dashboard's analysis, all from kneeage.stats on :func:`reads_table` (pass it if you have it)."""
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
            est, ci = stats.bootstrap_readers_cases(t, "case_id", "reader_id", "diff", n_boot, seed=0)
            per = {rid: stats.compare_errors(g.assisted, g.unassisted, g.reference_bone_age_months, n_boot=n_boot).as_dict()
                   for rid, g in t.groupby("reader_id") if len(g) >= 3}
            m = t[t.model_months.notna()]
            moved = float(np.mean((m.assisted - m.model_months).abs() < (m.unassisted - m.model_months).abs())) if len(m) else None
            out["assisted_vs_unassisted"] = {"label": "sensitivity analysis (bootstrap)",  # primary: out["orh"]
                                             "pooled_mae_difference": est, "ci": list(ci), "per_reader": per,
                                             "share_moved_toward_model": moved, "n_pairs": int(len(t))}
    out["orh"] = mrmc.study_analysis(first)  # issue #21: the primary reader-study analysis (ORH MRMC)
    for key in ("readers", "inter_reader_icc", "intra_reader"):
        if key in out:
            out[key] = tuple(out[key])
    return StudyAnalysis(**out)


DEMO_COHORT = "synthetic demo cohort"  # the name of a cohort a protocol's [synthetic] section renders


def demo_cohort_ids(store: Store) -> set[str]:
    """Cohorts rendered for reader studies' demonstrations: they are not a site's validation cohorts, and the
    validation page does not list their runs."""
    studies, cohorts = store.studies(), store.cohorts()
    if not len(studies) or not len(cohorts):
        return set()
    used = set(studies.cohort_id)
    return {c.id for c in cohorts.itertuples() if c.id in used and c.site == "synthetic"
            and str(c.name).startswith(DEMO_COHORT)}


def why_missing(analysis: dict, reads: pd.DataFrame, protocol: Protocol | None = None) -> dict[str, str]:
    """For each part of the analysis that is absent, the sentence that says why (what it needs, what there is)."""
    out: dict[str, str] = {}
    first = reads[(reads["repeat"] == 0) & (reads.unreadable == 0)] if len(reads) else reads
    if not analysis.get("inter_reader_icc"):
        un = first[first.arm == "unassisted"] if len(first) and "unassisted" in set(first.arm) else first
        n_readers = int(un.reader_id.nunique()) if len(un) else 0
        shared = 0
        if n_readers >= 2:
            per_case = un.groupby("case_id").reader_id.nunique()
            shared = int((per_case == n_readers).sum())
        out["Inter-reader ICC"] = (f"needs at least two readers who have read the same 3 or more cases; so far "
                                   f"{n_readers} reader{'s' if n_readers != 1 else ''} "
                                   + (f"with {shared} case{'s' if shared != 1 else ''} read by all." if n_readers >= 2
                                      else "has read." if n_readers == 1 else "have read."))
    if not analysis.get("assisted_vs_unassisted"):
        if protocol is not None and not (protocol.assisted and protocol.unassisted):
            out["Assisted vs unassisted"] = (f"this study's protocol has only the {'assisted' if protocol.assisted else 'unassisted'} "
                                             "arm, so there is nothing to compare.")
        else:
            pairs = 0
            if len(first) and {"assisted", "unassisted"} <= set(first.arm):
                pairs = int(len(first.pivot_table(index=["reader_id", "case_id"], columns="arm",
                                                  values="estimate_months").dropna()))
            out["Assisted vs unassisted"] = (f"needs 3 or more cases that one reader has read in both arms; so far {pairs}"
                                             + (" (the second arm opens after the washout)." if protocol is not None
                                                and protocol.washout_days else "."))
    if not analysis.get("intra_reader") and protocol is not None:
        out["Intra-reader agreement"] = ("the protocol has no repeat reads." if not protocol.repeats
                                         else "needs 3 or more repeated cases per reader; the repeats come at the end of each worklist.")
    if not analysis.get("model"):
        out["Model on the same cases"] = ("the study has no assisted arm, so no model run." if protocol is not None
                                          and not protocol.assisted else "needs 3 or more read cases with the model's estimate.")
    return out


def describe(store: Store, study_id: str) -> str:
    """What a study is made of and what to do next, for the PI (``study create`` prints it)."""
    protocol, case_ids = study_protocol(store, study_id)
    study = store.study(study_id)
    cohort = store.cohort(study["cohort_id"])
    arms = " and ".join(protocol.arms) + (f", then {protocol.repeats} repeat reads" if protocol.repeats else "")
    lines = [
        f"Created reader study {protocol.name!r} (id {study_id}).",
        f"  cases: {len(case_ids)} from cohort {cohort['site']} · {cohort['name']} ({cohort['id']}), sampled {protocol.sampling}",
        f"  arms: {arms}; order {protocol.order}" + (f", washout {protocol.washout_days:g} days" if protocol.washout_days else ""),
        f"  model for the assisted arm: {store.run(study['run_id'])['model_name']}" if study["run_id"] else "  no model (unassisted only)",
        f"  reader codes are valid for {protocol.code_days} days; readers see only their own worklist",
        "Next:",
        f"  1. invite readers:   python -m kneeage study invite {study_id} --reader \"Dr A\" --reader \"Dr B\"",
        "  2. give each reader their code; they open the app (streamlit run app.py), choose Reading room and type it",
        f"  3. follow progress:  python -m kneeage study status {study_id}   (or the Reader studies (PI) page)",
        f"  4. export:           python -m kneeage study export {study_id} --out results/",
    ]
    return "\n".join(lines)


def setup_study(store: Store, protocol: Protocol, predictor=None, cohort_id: str | None = None) -> str:
    """Create a study from a protocol: over a stored cohort, or over a synthetic cohort rendered from the
    protocol's ``[synthetic]`` section. When the assisted arm is on, the model is run on the cohort
    first (resuming an existing run of the same model)."""
    if cohort_id is None:
        if not protocol.synthetic:
            raise InputError(f"protocol {protocol.name!r}: give a cohort, or a [synthetic] section for a demo cohort.")
        n, seed = int(protocol.synthetic.get("n", 24)), int(protocol.synthetic.get("seed", 7))
        folder = home() / "cohorts" / f"synthetic-{seed}-{n}"
        if not (folder / "manifest.csv").exists():
            write_cohort(folder, n, seed=seed, size=int(protocol.synthetic.get("size", 384)))
        source = FolderSource(folder)
        check = check_cohort(read_manifest(folder / "manifest.csv"), source)
        cohort_id = validation.ingest(store, check, f"{DEMO_COHORT} (seed {seed})", "synthetic", source)
    run_id = None
    if protocol.assisted:
        run_id = validation.run_model(store, cohort_id, predictor or Predictor(), open_source(store.cohort(cohort_id)["source"]))
    return create_study(store, protocol, cohort_id, run_id)
