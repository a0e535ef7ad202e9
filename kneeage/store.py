"""The embedded SQLite store (sqlite-utils, WAL). The only module that writes SQL.

Tables: ``cohorts`` (one per ingested cohort), ``cases`` (de-identified rows: pseudonymous case id,
image hash, derived ages, reference; the image location is kept so a run can resume, and is never
exported), ``runs`` (a cohort × a model version; re-running a model resumes its run, another model
gets its own), ``results`` (one row per run × case, upserted, so a resumed run neither loses nor
doubles a case). Each write is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlite_utils



def home() -> Path:
    """The study folder: $KNEEAGE_HOME, else studies/ in the project (the database and uploads live here)."""
    return Path(os.environ.get("KNEEAGE_HOME") or Path(__file__).resolve().parents[1] / "studies")


def default_db() -> Path:
    return home() / "kneeage.db"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_private(path: str | Path, text: str) -> None:
    """Write a file whole (a temporary file renamed over it) and readable by its owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


_WRITERS: dict[str, threading.Lock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer(path) -> threading.Lock:
    """One lock per database file in this process: concurrent sessions queue here and wake at once,
    instead of polling SQLite's busy handler (which sleeps in steps of up to 100 ms). Other processes
    are still serialised by SQLite itself."""
    key = str(Path(path).resolve())
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, threading.Lock())


class StudyTables:
    """Reader-study storage (mixed into Store)."""

    db: sqlite_utils.Database
    path: Path

    def add_study(self, row: dict, actor: str = "pi") -> None:
        with self.db.conn:
            self.db.table("studies").insert(row)
            self._audit(row["id"], actor, "create study", row["name"])

    def study(self, study_id: str) -> dict:
        return self.db.table("studies").get(study_id)

    def studies(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.db.table("studies").rows_where(order_by="created")))

    def add_reader(self, row: dict, worklist: list[dict]) -> None:
        with self.db.conn:
            self.db.table("readers").insert(row)
            self.db.table("worklist").insert_all(worklist)
            self._audit(row["study_id"], "pi", "invite reader", row["id"])

    def reader(self, reader_id: str) -> dict | None:
        rows = list(self.db.table("readers").rows_where("id = ?", [reader_id]))
        return rows[0] if rows else None

    def readers(self, study_id: str) -> pd.DataFrame:
        cols = "id, study_id, name, role, created, expires, revoked"  # never the code hash
        return pd.DataFrame(list(self.db.query(f"select {cols} from readers where study_id = ? order by created",
                                               [study_id])))

    def revoke(self, reader_id: str) -> None:
        with self.db.conn:
            self.db.table("readers").update(reader_id, {"revoked": 1})
            self._audit(self.reader(reader_id)["study_id"], "pi", "revoke reader", reader_id)

    def reissue(self, reader_id: str, code_hash: str, salt: str, expires: str) -> None:
        """A new code for the same reader (worklist and answers kept); the old code stops working."""
        with self.db.conn:
            self.db.table("readers").update(reader_id, {"code_hash": code_hash, "salt": salt, "expires": expires,
                                                        "revoked": 0})
            self._audit(self.reader(reader_id)["study_id"], "pi", "reissue code", reader_id)

    def reader_standing(self, reader_id: str) -> tuple[int, str, str] | None:
        """(revoked, expires, code_hash) of a reader (plain SQL: checked on every reading-room request)."""
        return self.db.conn.execute("select revoked, expires, code_hash from readers where id = ?", [reader_id]).fetchone()

    def worklist(self, reader_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db.table("worklist").rows_where("reader_id = ?", [reader_id], order_by="position")))

    def worklist_item(self, reader_id: str, position: int) -> dict | None:
        """One worklist row (plain SQL: this is on the answer-saving hot path)."""
        cur = self.db.conn.execute("select case_id, arm, repeat from worklist where reader_id = ? and position = ?",
                                   [reader_id, position])
        row = cur.fetchone()
        return dict(zip(("case_id", "arm", "repeat"), row)) if row else None

    def reader_progress(self, reader_id: str) -> tuple[int, int, dict | None, str | None]:
        """(answered, worklist length, first unanswered item, time of the first answer) in plain SQL."""
        c = self.db.conn
        total = c.execute("select count(*) from worklist where reader_id = ?", [reader_id]).fetchone()[0]
        done, first = c.execute("select count(*), min(submitted) from reads where reader_id = ?", [reader_id]).fetchone()
        row = c.execute("select w.position, w.case_id, w.arm, w.repeat, w.session from worklist w left join reads r "
                        "on r.reader_id = w.reader_id and r.position = w.position where w.reader_id = ? and "
                        "r.position is null order by w.position limit 1", [reader_id]).fetchone()
        item = dict(zip(("position", "case_id", "arm", "repeat", "session"), row)) if row else None
        return done, total, item, first

    def case_facts(self, cohort_id: str, case_id: str) -> dict:
        row = self.db.conn.execute("select sex, chronological_age_months, image from cases where cohort_id = ? and "
                                   "case_id = ?", [cohort_id, case_id]).fetchone()
        return dict(zip(("sex", "chronological_age_months", "image"), row))

    def predicted(self, run_id: str, case_id: str) -> float | None:
        row = self.db.conn.execute("select predicted_bone_age_months from results where run_id = ? and case_id = ?",
                                   [run_id, case_id]).fetchone()
        return row[0] if row else None

    def study_protocol_json(self, study_id: str) -> str:
        """A study's protocol (fixed once created, so cached per Store)."""
        cache = self.__dict__.setdefault("_protocols", {})
        if study_id not in cache:
            row = self.db.conn.execute("select protocol from studies where id = ?", [study_id]).fetchone()
            if row is None:
                from .errors import InputError

                raise InputError(f"study {study_id!r} does not exist in {self.path}.")
            cache[study_id] = row[0]
        return cache[study_id]

    def reads(self, study_id: str | None = None, reader_id: str | None = None) -> pd.DataFrame:
        where = " and ".join(w for w, v in (("study_id = ?", study_id), ("reader_id = ?", reader_id)) if v)
        args = [v for v in (study_id, reader_id) if v]
        return pd.DataFrame(list(self.db.table("reads").rows_where(where or None, args or None,
                                                                   order_by="reader_id, position")))

    def save_read(self, row: dict, allow_change: bool) -> str:
        """Insert a read atomically; 'saved', 'changed', or 'locked' when it exists and may not change."""
        with _writer(self.path):
            return self._save_read(row, allow_change)

    def _save_read(self, row: dict, allow_change: bool) -> str:
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = conn.execute("select revision from reads where reader_id = ? and position = ?",
                               [row["reader_id"], row["position"]]).fetchone()
            if old is not None and not allow_change:
                conn.execute("ROLLBACK")
                return "locked"
            row = row | {"revision": 0 if old is None else old[0] + 1}
            cols = ", ".join(row)
            conn.execute(f"insert or replace into reads ({cols}) values ({', '.join('?' * len(row))})", list(row.values()))
            conn.execute("insert into audit (study_id, ts, actor, action, detail) values (?, ?, ?, ?, ?)",
                         [row["study_id"], now(), row["reader_id"], "change read" if old else "read",
                          f"position {row['position']} case {row['case_id']}"])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return "changed" if old is not None else "saved"

    def audit_log(self, study_id: str) -> pd.DataFrame:
        return pd.DataFrame(list(self.db.table("audit").rows_where("study_id = ?", [study_id], order_by="id")))

    def _audit(self, study_id, actor, action, detail):
        self.db.table("audit").insert({"study_id": study_id, "ts": now(), "actor": actor, "action": action,
                                       "detail": detail})

    def add_login_failures(self, ts: float, keys: tuple[str, ...]) -> None:
        """One wrong code or password, recorded under each key (its target and its clients)."""
        with self.db.conn:
            self.db.table("login_failures").insert_all({"ts": ts, "scope": k} for k in keys)

    def failure_times(self, key: str, since: float) -> list[float]:
        rows = self.db.conn.execute("select ts from login_failures where scope = ? and ts > ? order by ts", [key, since])
        return [r[0] for r in rows]


class Store(StudyTables):
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path or default_db())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # owner-only: SQLite gives the -wal and -shm files the database file's permissions
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        if self.path.stat().st_uid == os.getuid():
            self.path.chmod(0o600)
        conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=30000")
        self._schema()

    def _schema(self):
        t = self.db.table
        if "cohorts" not in self.db.table_names():
            t("cohorts").create({"id": str, "name": str, "site": str, "created": str, "source": str,
                                 "n_cases": int, "identifying_opt_in": int, "assumptions": str}, pk="id")
            t("cases").create({"cohort_id": str, "case_id": str, "row": int, "image": str, "image_hash": str,
                               "sex": str, "chronological_age_months": float, "reference_bone_age_months": float,
                               "reference_method": str, "reader": str, "crop_box": str, "extra": str},
                              pk=("cohort_id", "case_id"), foreign_keys=[("cohort_id", "cohorts", "id")])
            t("runs").create({"id": str, "cohort_id": str, "model_name": str, "model_hash": str, "model_dir": str,
                              "synthetic_demo": int, "created": str, "finished": str},
                             pk="id", foreign_keys=[("cohort_id", "cohorts", "id")])
            t("results").create({"run_id": str, "case_id": str, "status": str, "predicted_bone_age_months": float,
                                 "interval_lower": float, "interval_upper": float, "fold_values": str, "flags": str,
                                 "error": str, "updated": str}, pk=("run_id", "case_id"),
                                foreign_keys=[("run_id", "runs", "id")])
            t("results").create_index(["run_id", "status"])
        if "studies" not in self.db.table_names():
            t("studies").create({"id": str, "name": str, "cohort_id": str, "run_id": str, "protocol": str,
                                 "seed": int, "created": str}, pk="id")
            t("readers").create({"id": str, "study_id": str, "name": str, "role": str, "code_hash": str,
                                 "salt": str, "created": str, "expires": str, "revoked": int}, pk="id",
                                foreign_keys=[("study_id", "studies", "id")])
            t("worklist").create({"reader_id": str, "position": int, "study_id": str, "case_id": str, "arm": str,
                                  "repeat": int, "session": int}, pk=("reader_id", "position"))
            t("reads").create({"reader_id": str, "position": int, "study_id": str, "case_id": str, "arm": str,
                               "repeat": int, "estimate_months": float, "confidence": int, "unreadable": int,
                               "reason": str, "seconds": float, "shown_model_months": float, "submitted": str,
                               "revision": int}, pk=("reader_id", "position"))
            t("audit").create({"id": int, "study_id": str, "ts": str, "actor": str, "action": str, "detail": str},
                              pk="id")
            t("login_failures").create({"id": int, "ts": float, "scope": str}, pk="id")
        t("login_failures").create_index(["scope", "ts"], if_not_exists=True)

    def backup(self, out: str | Path) -> int:
        """A consistent copy of the whole database (SQLite online backup API); returns the table count."""
        out = Path(out)
        if out.resolve() == self.path.resolve():
            from .errors import InputError

            raise InputError(f"{out}: the backup must not overwrite the database itself.")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))  # a copy of study data: owner only
        dest = sqlite3.connect(str(tmp))
        with dest:
            self.db.conn.backup(dest)
        dest.close()
        tmp.replace(out)
        return len(sqlite_utils.Database(str(out)).table_names())

    # ------------------------------------------------------------------------------ cohorts
    def add_cohort(self, cases: pd.DataFrame, name: str, site: str, source: str, assumptions: list[str],
                   identifying_opt_in: bool = False, cohort_id: str | None = None) -> str:
        """Store a cohort's cases; with a ``cohort_id`` already stored, nothing changes (idempotent)."""
        cid = cohort_id or uuid.uuid4().hex[:12]
        if cohort_id and self.db.table("cohorts").count_where("id = ?", [cid]):
            return cid
        std = ["case_id", "row", "image", "image_hash", "sex", "chronological_age_months", "reference_bone_age_months",
               "reference_method", "reader", "crop_box"]
        extra_cols = [c for c in cases.columns if c not in std and (identifying_opt_in or not c.startswith("identifying_"))]
        rows = []
        for r in cases.to_dict("records"):
            row = {k: _plain(r.get(k)) for k in std}
            row["extra"] = json.dumps({k: _plain(r[k]) for k in extra_cols})
            rows.append(row | {"cohort_id": cid})
        with self.db.conn:
            self.db.table("cohorts").insert({"id": cid, "name": name, "site": site, "created": now(), "source": source,
                                             "n_cases": len(rows), "identifying_opt_in": int(identifying_opt_in),
                                             "assumptions": json.dumps(assumptions)})
            self.db.table("cases").insert_all(rows)
        return cid

    def cohorts(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.db.table("cohorts").rows_where(order_by="created desc")))

    def cohort(self, cohort_id: str) -> dict:
        return self.db.table("cohorts").get(cohort_id)

    def cases(self, cohort_id: str) -> pd.DataFrame:
        df = pd.DataFrame(list(self.db.table("cases").rows_where("cohort_id = ?", [cohort_id], order_by="row")))
        if len(df):
            extra = pd.DataFrame([json.loads(e or "{}") for e in df.pop("extra")], index=df.index)
            df = pd.concat([df, extra], axis=1)
        return df

    # --------------------------------------------------------------------------------- runs
    def run_for(self, cohort_id: str, model_name: str, model_hash: str, model_dir: str, synthetic_demo: bool) -> str:
        """The run of this model version on this cohort (created on first use; resumed after)."""
        rid = hashlib.sha256(f"{cohort_id}:{model_hash}".encode()).hexdigest()[:12]
        self.db.table("runs").insert({"id": rid, "cohort_id": cohort_id, "model_name": model_name,
                                      "model_hash": model_hash, "model_dir": model_dir,
                                      "synthetic_demo": int(synthetic_demo), "created": now(), "finished": None},
                                     ignore=True)
        return rid

    def runs(self, cohort_id: str | None = None) -> pd.DataFrame:
        where, args = ("cohort_id = ?", [cohort_id]) if cohort_id else (None, None)
        return pd.DataFrame(list(self.db.table("runs").rows_where(where, args, order_by="created")))

    def run(self, run_id: str) -> dict:
        return self.db.table("runs").get(run_id)

    def pending(self, run_id: str) -> list[str]:
        run = self.run(run_id)
        rows = self.db.query(
            "select c.case_id from cases c left join results r on r.run_id = ? and r.case_id = c.case_id "
            "where c.cohort_id = ? and r.case_id is null order by c.row", [run_id, run["cohort_id"]])
        return [r["case_id"] for r in rows]

    def save_results(self, run_id: str, rows: list[dict]) -> None:
        """Upsert a batch of per-case results in one transaction."""
        stamp = now()
        with self.db.conn:
            self.db.table("results").upsert_all([r | {"run_id": run_id, "updated": stamp} for r in rows],
                                                pk=("run_id", "case_id"))

    def finish(self, run_id: str) -> None:
        with self.db.conn:
            self.db.table("runs").update(run_id, {"finished": now()})

    def results(self, run_id: str) -> pd.DataFrame:
        """Per-case results joined with the cohort's cases (cases not yet run have status 'pending')."""
        run = self.run(run_id)
        cases = self.cases(run["cohort_id"])
        res = pd.DataFrame(list(self.db.table("results").rows_where("run_id = ?", [run_id])))
        if not len(res):
            res = pd.DataFrame(columns=["case_id", "status", "predicted_bone_age_months", "interval_lower",
                                        "interval_upper", "fold_values", "flags", "error"])
        df = cases.merge(res.drop(columns=["run_id", "updated"], errors="ignore"), on="case_id", how="left")
        df["status"] = df["status"].fillna("pending")
        return df

    def counts(self, run_id: str) -> dict:
        rows = self.db.query("select status, count(*) n from results where run_id = ? group by status", [run_id])
        return {r["status"]: r["n"] for r in rows}


def _plain(v):
    if v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v
