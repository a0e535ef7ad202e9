"""The study database: SQLite (the embedded default, WAL) or PostgreSQL, through one query layer,
SQLAlchemy Core. The only module that writes SQL; every query is written once and runs on both.

**Where.** ``Store(db)``, the CLI's ``--db`` or ``KNEEAGE_DATABASE_URL``: a file path or ``sqlite:///path``
(default ``$KNEEAGE_HOME/kneeage.db``), or ``postgresql://user:password@host:port/database`` (psycopg 3),
for several app servers sharing one study. Engines (connection pools) are kept per database and process.

**Tables.** ``cohorts`` (one per ingested cohort), ``cases`` (de-identified rows: pseudonymous case id,
image hash, derived ages, reference; the image location is kept so a run can resume, and is never
exported), ``runs`` (a cohort × a model version; re-running a model resumes its run, another model
gets its own), ``results`` (one row per run × case, upserted, so a resumed run neither loses nor
doubles a case); reader studies: ``studies``, ``readers``, ``worklist``, ``reads``, ``audit``,
``login_failures``; and ``schema_version``.

**Transactions.** Each write is one transaction (:meth:`Store._write`); the drivers run in autocommit
and kneeage says ``BEGIN`` itself, so a one-statement read costs one round trip. On SQLite the writers of
one process queue on a lock (they wake at once instead of polling SQLite's busy handler) and take the
database's write lock at ``BEGIN IMMEDIATE``, so a transaction never fails half-way on a busy database;
other processes wait in SQLite's busy handler. On PostgreSQL (read committed) concurrent writers are
kept apart by the primary keys and ``ON CONFLICT`` upserts: an answer is inserted, or changed, or
refused, in one statement. A long read that must be consistent (copy, backup) runs in one snapshot.

**The reader's hot path** (a reader's page view and answer) runs statements built once below, compiled
by SQLAlchemy once per database kind and executed on the pooled driver connection (:meth:`Store._driver`):
the same statements for both backends, without SQLAlchemy's per-call execution layer.

**Schema versions.** ``schema_version`` records each version a database has passed through;
``SCHEMA_VERSION`` is this release's. Opening a database brings it up to date under a lock (SQLite's
write lock, a PostgreSQL advisory lock): a new database is created at the current version, an older one
runs ``MIGRATIONS[v]`` for every version after its own, and one written by a newer release is refused.
To change the schema: change the tables below, raise ``SCHEMA_VERSION`` and add ``MIGRATIONS[n]`` that
brings a version n-1 database to the same shape (SQLAlchemy DDL, or SQL that both backends accept).
Version 1 is the schema of the releases before it (made by sqlite-utils), unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from .config import home
from .errors import InputError, StoreError


def default_db() -> Path:
    return home() / "kneeage.db"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------ schema

META = sa.MetaData()
TEXT, FLOAT = sa.Text(), sa.Float()
INT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit on both; INTEGER keeps SQLite's rowid ids


def _table(name: str, columns: dict, pk: tuple[str, ...], fks: dict | None = None, index: tuple = ()) -> sa.Table:
    fks = fks or {}
    cols = [sa.Column(c, t, *([sa.ForeignKey(fks[c])] if c in fks else []), primary_key=c in pk,
                      autoincrement=(c == "id" and t is INT) or False) for c, t in columns.items()]
    idx = [sa.Index(f"idx_{name}_{'_'.join(i)}", *i) for i in index]
    return sa.Table(name, META, *cols, *idx)


cohorts = _table("cohorts", {"id": TEXT, "name": TEXT, "site": TEXT, "created": TEXT, "source": TEXT, "n_cases": INT,
                             "identifying_opt_in": INT, "assumptions": TEXT}, ("id",))
cases = _table("cases", {"cohort_id": TEXT, "case_id": TEXT, "row": INT, "image": TEXT, "image_hash": TEXT, "sex": TEXT,
                         "chronological_age_months": FLOAT, "reference_bone_age_months": FLOAT,
                         "reference_method": TEXT, "reader": TEXT, "crop_box": TEXT, "extra": TEXT},
               ("cohort_id", "case_id"), {"cohort_id": "cohorts.id"})
runs = _table("runs", {"id": TEXT, "cohort_id": TEXT, "model_name": TEXT, "model_hash": TEXT, "model_dir": TEXT,
                       "synthetic_demo": INT, "created": TEXT, "finished": TEXT}, ("id",), {"cohort_id": "cohorts.id"})
results = _table("results", {"run_id": TEXT, "case_id": TEXT, "status": TEXT, "predicted_bone_age_months": FLOAT,
                             "interval_lower": FLOAT, "interval_upper": FLOAT, "fold_values": TEXT, "flags": TEXT,
                             "error": TEXT, "updated": TEXT}, ("run_id", "case_id"), {"run_id": "runs.id"},
                 index=(("run_id", "status"),))
studies = _table("studies", {"id": TEXT, "name": TEXT, "cohort_id": TEXT, "run_id": TEXT, "protocol": TEXT,
                             "seed": INT, "created": TEXT}, ("id",))
readers = _table("readers", {"id": TEXT, "study_id": TEXT, "name": TEXT, "role": TEXT, "code_hash": TEXT, "salt": TEXT,
                             "created": TEXT, "expires": TEXT, "revoked": INT}, ("id",), {"study_id": "studies.id"})
worklist = _table("worklist", {"reader_id": TEXT, "position": INT, "study_id": TEXT, "case_id": TEXT, "arm": TEXT,
                               "repeat": INT, "session": INT}, ("reader_id", "position"))
reads = _table("reads", {"reader_id": TEXT, "position": INT, "study_id": TEXT, "case_id": TEXT, "arm": TEXT,
                         "repeat": INT, "estimate_months": FLOAT, "confidence": INT, "unreadable": INT, "reason": TEXT,
                         "seconds": FLOAT, "shown_model_months": FLOAT, "submitted": TEXT, "revision": INT},
               ("reader_id", "position"))
audit = _table("audit", {"id": INT, "study_id": TEXT, "ts": TEXT, "actor": TEXT, "action": TEXT, "detail": TEXT}, ("id",))
login_failures = _table("login_failures", {"id": INT, "ts": FLOAT, "scope": TEXT}, ("id",), index=(("scope", "ts"),))
schema_version = _table("schema_version", {"version": INT, "applied": TEXT}, ("version",))

DATA_TABLES = [t for t in META.sorted_tables if t is not schema_version]  # parents before children
SCHEMA_VERSION = 1


def _to_v1(c: sa.Connection) -> None:
    """From the unversioned releases before it: their tables, created in two groups (validation, reader
    studies) and an index added later, so an old database may lack some of them."""
    META.create_all(c, tables=DATA_TABLES, checkfirst=True)
    for t in DATA_TABLES:
        for ix in t.indexes:
            ix.create(c, checkfirst=True)


MIGRATIONS: dict[int, Callable[[sa.Connection], None]] = {1: _to_v1}


# ---------------------------------------------------------------------- the reader's hot path
# Every page view and answer of every reader runs these: built once with bound parameters, so a call only
# executes an already compiled statement (building a statement costs more than running it).
P = sa.bindparam
W = worklist
STANDING = sa.select(readers.c.revoked, readers.c.expires, readers.c.code_hash).where(readers.c.id == P("reader_id"))
STANDING_AND_ITEM = (STANDING.add_columns(W.c.case_id, W.c.arm, W.c.repeat)
                     .select_from(readers.outerjoin(W, sa.and_(W.c.reader_id == readers.c.id, W.c.position == P("position")))))
WORKLIST_ITEM = sa.select(W.c.case_id, W.c.arm, W.c.repeat).where(W.c.reader_id == P("reader_id"), W.c.position == P("position"))
_counts = (sa.select(sa.func.count()).select_from(reads).where(reads.c.reader_id == P("reader_id")).scalar_subquery().label("done"),
           sa.select(sa.func.count()).select_from(W).where(W.c.reader_id == P("reader_id")).scalar_subquery().label("total"),
           sa.select(sa.func.min(reads.c.submitted)).where(reads.c.reader_id == P("reader_id")).scalar_subquery().label("first"))
ITEM = ("position", "case_id", "arm", "repeat", "session")
OPEN_ITEM = (sa.select(*_counts, *(W.c[k] for k in ITEM))
             .select_from(W.outerjoin(reads, sa.and_(reads.c.reader_id == W.c.reader_id, reads.c.position == W.c.position)))
             .where(W.c.reader_id == P("reader_id"), reads.c.position.is_(None)).order_by(W.c.position).limit(1))
PROGRESS = sa.select(*_counts)
CASE_FACTS = (sa.select(cases.c.sex, cases.c.chronological_age_months, cases.c.image)
              .where(cases.c.cohort_id == P("cohort_id"), cases.c.case_id == P("case_id")))
PREDICTED = (sa.select(results.c.predicted_bone_age_months)
             .where(results.c.run_id == P("run_id"), results.c.case_id == P("case_id")))
PROTOCOL = sa.select(studies.c.protocol).where(studies.c.id == P("study_id"))
AUDIT = audit.insert().values({k: P(k) for k in ("study_id", "ts", "actor", "action", "detail")})
READ_COLUMNS = [c.name for c in reads.c if c.name != "revision"]


def _save_read_statement(dialect: str, allow_change: bool):
    """Insert a read only if its reader is in good standing (not revoked, signed in with the current code,
    which had not expired when the answer was submitted) and the position is theirs, with this case; arm
    and repeat come from the worklist. On the key (reader, position) either nothing or the change, counted
    in ``revision``. No row back: not saved (:func:`kneeage.readerstudy.submit` then says why). On
    PostgreSQL the same statement writes the audit line (one round trip, atomic without BEGIN/COMMIT);
    SQLite, which has no INSERT inside WITH, writes it next in the same transaction."""
    given = [k for k in READ_COLUMNS if k not in ("arm", "repeat")]
    guard = sa.and_(readers.c.id == P("reader_id"), sa.func.coalesce(readers.c.revoked, 0) == 0,
                    sa.func.substr(readers.c.code_hash, 1, 16) == P("code"), readers.c.expires >= P("submitted"),
                    W.c.case_id == P("case_id"))
    source = (sa.select(*(sa.cast(P(k), reads.c[k].type) for k in given), W.c.arm, W.c.repeat, sa.literal(0))
              .select_from(readers.join(W, sa.and_(W.c.reader_id == readers.c.id, W.c.position == P("position"))))
              .where(guard))
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(reads)
    ins = ins.from_select([*given, "arm", "repeat", "revision"], source)
    key = ["reader_id", "position"]
    if allow_change:
        changed = {k: ins.excluded[k] for k in READ_COLUMNS if k not in key} | {"revision": reads.c.revision + 1}
        ins = ins.on_conflict_do_update(index_elements=key, set_=changed)
    else:
        ins = ins.on_conflict_do_nothing(index_elements=key)
    ins = ins.returning(reads.c.revision)
    if dialect != "postgresql":
        return ins
    saved = ins.cte("saved")
    line = sa.select(sa.cast(P("study_id"), sa.Text), sa.cast(P("ts"), sa.Text), sa.cast(P("reader_id"), sa.Text),
                     sa.case((saved.c.revision > 0, "change read"), else_="read"), sa.cast(P("detail"), sa.Text))
    return (audit.insert().from_select(["study_id", "ts", "actor", "action", "detail"], line.select_from(saved))
            .add_cte(saved, nest_here=True).returning(audit.c.action == "change read"))


SAVE_READ = {(d, a): _save_read_statement(d, a) for d in ("sqlite", "postgresql") for a in (False, True)}
_COMPILED: dict[tuple[str, int], tuple] = {}


def _compiled(dialect, stmt) -> tuple:
    """(SQL, positional parameter names or None, compiled) of a hot-path statement for a dialect, made once."""
    key = (dialect.name, id(stmt))
    if key not in _COMPILED:
        c = stmt.compile(dialect=dialect)
        _COMPILED[key] = (c.string, c.positiontup, c)
    return _COMPILED[key]


# ------------------------------------------------------------------------------- connections


def database_url(db: str | Path | None = None) -> str:
    """The database as a SQLAlchemy URL: ``db`` (a file path or URL), else ``$KNEEAGE_DATABASE_URL``,
    else the SQLite file ``$KNEEAGE_HOME/kneeage.db``."""
    raw = str(db or os.environ.get("KNEEAGE_DATABASE_URL") or default_db()).strip()
    if "://" not in raw:
        return sa.URL.create("sqlite", database=str(Path(raw).expanduser().absolute())).render_as_string(False)
    try:
        url = sa.make_url(raw)
    except sa.exc.ArgumentError:
        raise InputError(f"{raw.split('://')[0]}://…: not a database URL; give a file path, sqlite:///path or "
                         "postgresql://user@host/database.") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise InputError("a sqlite:/// database URL needs a file, as in sqlite:///studies/kneeage.db.")
        return url.set(database=str(Path(url.database).expanduser().absolute())).render_as_string(False)
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg").render_as_string(False)
    raise InputError(f"{url.drivername}://…: kneeage stores studies in SQLite (a file path or sqlite:///…) or "
                     "PostgreSQL (postgresql://…).")


_ENGINES: dict[tuple, sa.Engine] = {}
_READY: set[tuple] = set()
_WRITERS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def _writer(url: str) -> threading.Lock:
    """One lock per SQLite database in this process: concurrent sessions queue here and wake at once,
    instead of polling SQLite's busy handler (which sleeps in steps of up to 100 ms). Other processes
    are still serialised by SQLite itself."""
    with _GUARD:
        return _WRITERS.setdefault(url, threading.Lock())


# The drivers run in autocommit and kneeage says BEGIN itself (the SQLAlchemy recipe for SQLite, used for
# both): nothing for a one-statement read (one round trip, no BEGIN/ROLLBACK on the reader's hot path), a
# write transaction that takes SQLite's write lock at once, or a consistent snapshot for a long read.
BEGIN = {("sqlite", "write"): "BEGIN IMMEDIATE", ("sqlite", "snapshot"): "BEGIN",
         ("postgresql", "write"): "BEGIN", ("postgresql", "snapshot"): "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"}


def _create_engine(url: str) -> sa.Engine:
    if sa.make_url(url).get_backend_name() == "postgresql":
        # no pre-ping (a round trip per checkout): after a server restart the pool notices the closed
        # connections at the first request that meets one (one StoreError) and reconnects after it. A fixed
        # pool of 10 per app process and no overflow: overflow connections are closed when returned, so
        # every burst of answers paid for new server processes (p95 at 200 readers 266 ms against 13 ms;
        # bench/answer_save.py); sessions beyond 10 wait for a free connection instead.
        engine = sa.create_engine(url, pool_size=10, max_overflow=0, pool_recycle=1800,
                                  connect_args={"connect_timeout": 10, "application_name": "kneeage"})

        @sa.event.listens_for(engine, "connect")
        def _autocommit(dbapi, _record):
            dbapi.autocommit = True
    else:
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi, _record):
            dbapi.isolation_level = None
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
                dbapi.execute(f"PRAGMA {pragma}")

    @sa.event.listens_for(engine, "begin")
    def _begin(conn):
        mode = conn.get_execution_options().get("kneeage_tx")
        if mode:
            conn.exec_driver_sql(BEGIN[conn.dialect.name, mode])

    return engine


def _reason(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return (text.splitlines() or ["no reason given"])[0].rstrip(".")


class StudyTables:
    """Reader-study storage (mixed into Store)."""

    label: str
    _write: Callable
    _read: Callable

    def add_study(self, row: dict, actor: str = "pi") -> None:
        with self._write() as c:
            c.execute(studies.insert(), _clean(row))
            _audit(c, row["id"], actor, "create study", row["name"])

    def study(self, study_id: str) -> dict:
        """A study's row (fixed once created, so cached per Store)."""
        cache = self.__dict__.setdefault("_studies", {})
        if study_id not in cache:
            cache[study_id] = self._get(studies, study_id, "study")
        return dict(cache[study_id])

    def studies(self) -> pd.DataFrame:
        return self._frame(sa.select(studies).order_by(studies.c.created))

    def add_reader(self, row: dict, items: list[dict]) -> None:
        with self._write() as c:
            c.execute(readers.insert(), _clean(row))
            c.execute(worklist.insert(), [_clean(i) for i in items])
            _audit(c, row["study_id"], "pi", "invite reader", row["id"])

    def reader(self, reader_id: str) -> dict | None:
        return self._first(sa.select(readers).where(readers.c.id == reader_id))

    def readers(self, study_id: str) -> pd.DataFrame:
        cols = [readers.c[k] for k in ("id", "study_id", "name", "role", "created", "expires", "revoked")]  # never the code hash
        return self._frame(sa.select(*cols).where(readers.c.study_id == study_id).order_by(readers.c.created))

    def revoke(self, reader_id: str) -> None:
        self._update_reader(reader_id, {"revoked": 1}, "revoke reader")

    def reissue(self, reader_id: str, code_hash: str, salt: str, expires: str) -> None:
        """A new code for the same reader (worklist and answers kept); the old code stops working."""
        self._update_reader(reader_id, {"code_hash": code_hash, "salt": salt, "expires": expires, "revoked": 0},
                            "reissue code")

    def _update_reader(self, reader_id: str, values: dict, action: str) -> None:
        with self._write() as c:
            study_id = c.execute(sa.update(readers).where(readers.c.id == reader_id).values(_clean(values))
                                 .returning(readers.c.study_id)).scalar()
            if study_id is None:
                raise InputError(f"reader {reader_id!r} does not exist in {self.label}.")
            _audit(c, study_id, "pi", action, reader_id)

    def reader_standing(self, reader_id: str, position: int | None = None) -> dict | None:
        """A reader's revoked, expires and code_hash (checked on every reading-room request); with a
        ``position``, also that worklist item's case_id, arm and repeat (None if there is none), in the same
        query: the answer-saving hot path. None if there is no such reader."""
        if position is None:
            return self._hot(STANDING, {"reader_id": reader_id})
        return self._hot(STANDING_AND_ITEM, {"reader_id": reader_id, "position": position})

    def worklist(self, reader_id: str) -> pd.DataFrame:
        return self._frame(sa.select(worklist).where(worklist.c.reader_id == reader_id).order_by(worklist.c.position))

    def worklist_item(self, reader_id: str, position: int) -> dict | None:
        """One worklist row (on the answer-saving hot path)."""
        return self._hot(WORKLIST_ITEM, {"reader_id": reader_id, "position": position})

    def reader_progress(self, reader_id: str) -> tuple[int, int, dict | None, str | None]:
        """(answered, worklist length, first unanswered item, time of the first answer), in one query while
        an item is open (every page view of every reader)."""
        row = self._hot(OPEN_ITEM, {"reader_id": reader_id})
        if row is None:  # all read (or no worklist)
            row = self._hot(PROGRESS, {"reader_id": reader_id})
            return row["done"], row["total"], None, row["first"]
        return row["done"], row["total"], {k: row[k] for k in ITEM}, row["first"]

    def case_facts(self, cohort_id: str, case_id: str) -> dict:
        return self._hot(CASE_FACTS, {"cohort_id": cohort_id, "case_id": case_id})

    def predicted(self, run_id: str, case_id: str) -> float | None:
        row = self._hot(PREDICTED, {"run_id": run_id, "case_id": case_id})
        return row["predicted_bone_age_months"] if row else None

    def study_protocol_json(self, study_id: str) -> str:
        """A study's protocol (fixed once created, so cached per Store)."""
        cache = self.__dict__.setdefault("_protocols", {})
        if study_id not in cache:
            row = self._hot(PROTOCOL, {"study_id": study_id})
            if row is None:
                raise InputError(f"study {study_id!r} does not exist in {self.label}.")
            cache[study_id] = row["protocol"]
        return cache[study_id]

    def reads(self, study_id: str | None = None, reader_id: str | None = None) -> pd.DataFrame:
        q = sa.select(reads).order_by(reads.c.reader_id, reads.c.position)
        if study_id:
            q = q.where(reads.c.study_id == study_id)
        if reader_id:
            q = q.where(reads.c.reader_id == reader_id)
        return self._frame(q)

    def save_read(self, row: dict, allow_change: bool, code: str) -> str | None:
        """Save a read in one transaction (on PostgreSQL one statement) if its reader, signed in with
        ``code``, is in good standing and the position is theirs (see the statement); 'saved', 'changed',
        or None when nothing was saved: refused, or the answer exists and may not change. Two sessions
        saving the same answer at once cannot double it: the primary key decides, and the loser's insert
        becomes the change (or is refused)."""
        values = {k: _plain(row.get(k)) for k in READ_COLUMNS} | {"code": code}
        audit_line = {"ts": now(), "detail": f"position {row['position']} case {row['case_id']}"}
        with self._driver(write=True, begin=not self.pg) as cur:
            self._run(cur, SAVE_READ[self.engine.dialect.name, bool(allow_change)], values | audit_line)
            got = cur.fetchone()
            if got is None:
                return None
            changed = bool(got[0])
            if not self.pg:
                self._run(cur, AUDIT, {"study_id": row["study_id"], "actor": row["reader_id"],
                                       "action": "change read" if changed else "read"} | audit_line)
        return "changed" if changed else "saved"

    def audit_log(self, study_id: str) -> pd.DataFrame:
        return self._frame(sa.select(audit).where(audit.c.study_id == study_id).order_by(audit.c.id))

    def add_login_failures(self, ts: float, keys: tuple[str, ...]) -> None:
        """One wrong code or password, recorded under each key (its target and its clients)."""
        with self._write() as c:
            c.execute(login_failures.insert(), [{"ts": ts, "scope": k} for k in keys])

    def failure_times(self, key: str, since: float) -> list[float]:
        q = (sa.select(login_failures.c.ts).where(login_failures.c.scope == key, login_failures.c.ts > since)
             .order_by(login_failures.c.ts))
        with self._read() as c:
            return list(c.execute(q).scalars())


def _audit(c: sa.Connection, study_id, actor, action, detail) -> None:
    c.execute(AUDIT, _clean({"study_id": study_id, "ts": now(), "actor": actor, "action": action, "detail": detail}))


class Store(StudyTables):
    """One study database. ``db``: a file path or a URL (see the module); ``must_exist``: refuse to create one."""

    def __init__(self, db: str | Path | None = None, must_exist: bool = False):
        self.url = database_url(db)
        url = sa.make_url(self.url)
        self.pg = url.get_backend_name() == "postgresql"
        self.path = None if self.pg else Path(url.database)
        self.label = url.render_as_string(hide_password=True) if self.pg else str(self.path)
        key: tuple = (self.url,)
        if self.path is not None:
            if must_exist and not self.path.is_file():
                raise StoreError(f"{self.path}: there is no study database at this path.")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # owner-only: SQLite gives the -wal and -shm files the database file's permissions
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            st = self.path.stat()
            if st.st_uid == os.getuid():
                self.path.chmod(0o600)
            key += (st.st_dev, st.st_ino)  # a file replaced at the same path gets its own engine
        self._key = key
        with _GUARD:
            self.engine = _ENGINES.get(key) or _ENGINES.setdefault(key, _create_engine(self.url))
        if key not in _READY:
            try:
                self._migrate(must_exist)
            except sa.exc.DBAPIError as e:
                raise StoreError(f"cannot open the study database {self.label}: {_reason(e)}.") from None
            _READY.add(key)

    def close(self) -> None:
        """Close this database's pooled connections in this process (other Stores on it reconnect)."""
        with _GUARD:
            _ENGINES.pop(self._key, None)
            _READY.discard(self._key)
        self.engine.dispose()

    # ------------------------------------------------------------------------- plumbing
    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One write transaction (committed at the end of the block, rolled back on any error)."""
        with _writer(self.url) if not self.pg else nullcontext():
            with self.engine.connect() as c:
                c.execution_options(kneeage_tx="write")
                with c.begin():
                    yield c

    @contextmanager
    def _write(self) -> Iterator[sa.Connection]:
        """:meth:`_transaction`, with a lost or busy database said in one sentence."""
        try:
            with self._transaction() as c:
                yield c
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
            raise StoreError(f"the study database {self.label} could not be written: {_reason(e)}.") from None

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[sa.Connection]:
        """A connection for reading, each statement on its own; ``snapshot``: everything read in the block
        comes from one consistent state (one transaction)."""
        try:
            with self.engine.connect() as c:
                if snapshot:
                    c.execution_options(kneeage_tx="snapshot")
                with c.begin():
                    yield c
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
            raise StoreError(f"the study database {self.label} could not be read: {_reason(e)}.") from None

    @contextmanager
    def _driver(self, write: bool = False, begin: bool = True) -> Iterator:
        """A cursor on a pooled driver connection for the reader's hot path (``write``: one transaction, as
        in :meth:`_transaction`; ``begin`` False: one statement on PostgreSQL, atomic by itself), where
        :meth:`_run` executes the statements above as SQLAlchemy compiled them for this database: the same
        statements, pool and transactions as everywhere else, without SQLAlchemy's per-call execution layer,
        which costs several times the driver's own work on a reader's answer (bench/answer_save.py)."""
        dialect = self.engine.dialect
        dbapi = dialect.loaded_dbapi
        with _writer(self.url) if write and not self.pg else nullcontext():
            raw, cur = self.engine.raw_connection(), None
            try:
                cur = raw.cursor()
                if write and begin:
                    cur.execute(BEGIN[dialect.name, "write"])
                yield cur
                if write:
                    raw.commit()
            except (dbapi.OperationalError, dbapi.InterfaceError) as e:
                if dialect.is_disconnect(e, raw.dbapi_connection, cur):
                    raw.invalidate()  # the server went away: the pool reconnects for the next request
                raise StoreError(f"the study database {self.label} could not be {'written' if write else 'read'}: "
                                 f"{_reason(e)}.") from None
            finally:
                raw.close()  # back to the pool, which rolls back whatever was not committed

    def _run(self, cur, stmt, params: dict) -> None:
        sql, positions, compiled = _compiled(self.engine.dialect, stmt)
        p = compiled.construct_params(params)
        cur.execute(sql, [p[k] for k in positions] if positions else p)

    def _hot(self, stmt, params: dict) -> dict | None:
        """The first row of a hot-path statement, as a dict."""
        with self._driver() as cur:
            self._run(cur, stmt, params)
            row = cur.fetchone()
            return dict(zip([d[0] for d in cur.description], row)) if row else None

    def _first(self, q, params: dict | None = None) -> dict | None:
        """The first row of a one-statement read (no transaction), as a dict."""
        try:
            with self.engine.connect() as c:
                row = c.execute(q, params).first()
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as e:
            raise StoreError(f"the study database {self.label} could not be read: {_reason(e)}.") from None
        return row._asdict() if row else None

    def _frame(self, q) -> pd.DataFrame:
        with self._read() as c:
            res = c.execute(q)
            return pd.DataFrame(res.fetchall(), columns=list(res.keys()))

    def _get(self, table: sa.Table, key: str, what: str) -> dict:
        row = self._first(sa.select(table).where(table.c.id == key))
        if row is None:
            raise InputError(f"{what} {key!r} does not exist in {self.label}.")
        return row

    def _insert(self, table: sa.Table):
        """INSERT with ON CONFLICT (the same construct, and the same SQL, on both backends)."""
        return (postgresql.insert if self.pg else sqlite.insert)(table)

    def _migrate(self, must_exist: bool) -> None:
        with self._transaction() as c:
            if self.pg:  # several app servers starting at once: one migrates, the others wait and find it done
                c.execute(sa.select(sa.func.pg_advisory_xact_lock(0x6B6E6565)))
            names = set(sa.inspect(c).get_table_names())
            if schema_version.name in names:
                version = c.execute(sa.select(sa.func.max(schema_version.c.version))).scalar() or 0
            elif names & {"cohorts", "studies"}:
                version = 0  # made by a release before schema versions
            elif must_exist:
                raise StoreError(f"{self.label} holds no kneeage study database.")
            else:
                META.create_all(c)
                c.execute(schema_version.insert(), {"version": SCHEMA_VERSION, "applied": now()})
                return
            if version > SCHEMA_VERSION:
                raise StoreError(f"{self.label} was written by a newer kneeage (schema version {version}; this release "
                                 f"reads up to {SCHEMA_VERSION}): upgrade kneeage to open it.")
            schema_version.create(c, checkfirst=True)
            for v in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[v](c)
                c.execute(schema_version.insert(), {"version": v, "applied": now()})

    def schema_version(self) -> int:
        with self._read() as c:
            return c.execute(sa.select(sa.func.max(schema_version.c.version))).scalar_one()

    def table_counts(self) -> dict[str, int]:
        with self._read() as c:
            return {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in DATA_TABLES}

    def rows(self, table: str) -> list[dict]:
        """Every row of one table, as stored (for audits and tests)."""
        with self._read() as c:
            return [dict(r._mapping) for r in c.execute(sa.select(META.tables[table]))]

    def backup(self, out: str | Path) -> int:
        """A consistent copy of the whole database as a SQLite file, even while in use (SQLite: the online
        backup API; PostgreSQL: one repeatable-read snapshot copied table by table). Returns the table count.
        A PostgreSQL backup goes back with ``db copy --from backup.db --to postgresql://…``."""
        out = Path(out)
        if self.path is not None and out.resolve() == self.path.resolve():
            raise InputError(f"{out}: the backup must not overwrite the database itself.")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".part")
        for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            p.unlink(missing_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))  # a copy of study data: owner only
        if self.pg:
            dest = Store(tmp)
            try:
                copy_database(self, dest)
            finally:
                dest.close()  # closing the last connection folds the WAL into the file
        else:
            raw = self.engine.raw_connection()
            try:
                with sqlite3.connect(str(tmp)) as dest:
                    raw.driver_connection.backup(dest)
                dest.close()
            finally:
                raw.close()
        tmp.replace(out)
        with sqlite3.connect(str(out)) as check:
            n = check.execute("select count(*) from sqlite_master where type = 'table'").fetchone()[0]
        check.close()
        return n

    # ------------------------------------------------------------------------------ cohorts
    def add_cohort(self, frame: pd.DataFrame, name: str, site: str, source: str, assumptions: list[str],
                   identifying_opt_in: bool = False, cohort_id: str | None = None) -> str:
        """Store a cohort's cases; with a ``cohort_id`` already stored, nothing changes (idempotent)."""
        cid = cohort_id or uuid.uuid4().hex[:12]
        std = ["case_id", "row", "image", "image_hash", "sex", "chronological_age_months", "reference_bone_age_months",
               "reference_method", "reader", "crop_box"]
        extra_cols = [c for c in frame.columns if c not in std and (identifying_opt_in or not c.startswith("identifying_"))]
        rows = []
        for r in frame.to_dict("records"):
            row = {k: _plain(r.get(k)) for k in std}
            row["extra"] = json.dumps({k: _plain(r[k]) for k in extra_cols})
            rows.append(row | {"cohort_id": cid})
        head = {"id": cid, "name": name, "site": site, "created": now(), "source": source, "n_cases": len(rows),
                "identifying_opt_in": int(identifying_opt_in), "assumptions": json.dumps(assumptions)}
        with self._write() as c:
            new = self._insert(cohorts).values(_clean(head)).on_conflict_do_nothing(index_elements=["id"]).returning(cohorts.c.id)
            if c.execute(new).first() and rows:
                c.execute(cases.insert(), rows)
        return cid

    def cohorts(self) -> pd.DataFrame:
        return self._frame(sa.select(cohorts).order_by(cohorts.c.created.desc()))

    def cohort(self, cohort_id: str) -> dict:
        return self._get(cohorts, cohort_id, "cohort")

    def cases(self, cohort_id: str) -> pd.DataFrame:
        df = self._frame(sa.select(cases).where(cases.c.cohort_id == cohort_id).order_by(cases.c.row))
        if len(df):
            extra = pd.DataFrame([json.loads(e or "{}") for e in df.pop("extra")], index=df.index)
            df = pd.concat([df, extra], axis=1)
        return df

    # --------------------------------------------------------------------------------- runs
    def run_for(self, cohort_id: str, model_name: str, model_hash: str, model_dir: str, synthetic_demo: bool) -> str:
        """The run of this model version on this cohort (created on first use; resumed after)."""
        rid = hashlib.sha256(f"{cohort_id}:{model_hash}".encode()).hexdigest()[:12]
        row = {"id": rid, "cohort_id": cohort_id, "model_name": model_name, "model_hash": model_hash,
               "model_dir": model_dir, "synthetic_demo": int(synthetic_demo), "created": now(), "finished": None}
        with self._write() as c:
            c.execute(self._insert(runs).values(_clean(row)).on_conflict_do_nothing(index_elements=["id"]))
        return rid

    def runs(self, cohort_id: str | None = None) -> pd.DataFrame:
        q = sa.select(runs).order_by(runs.c.created)
        return self._frame(q.where(runs.c.cohort_id == cohort_id) if cohort_id else q)

    def run(self, run_id: str) -> dict:
        return self._get(runs, run_id, "run")

    def pending(self, run_id: str) -> list[str]:
        run = self.run(run_id)
        r = results
        q = (sa.select(cases.c.case_id)
             .select_from(cases.outerjoin(r, sa.and_(r.c.run_id == run_id, r.c.case_id == cases.c.case_id)))
             .where(cases.c.cohort_id == run["cohort_id"], r.c.case_id.is_(None)).order_by(cases.c.row))
        with self._read() as c:
            return list(c.execute(q).scalars())

    def save_results(self, run_id: str, rows: list[dict]) -> None:
        """Upsert a batch of per-case results in one transaction (a row updates only the columns it has)."""
        stamp = now()
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            r = _clean(r | {"run_id": run_id, "updated": stamp})
            groups.setdefault(tuple(r), []).append(r)
        with self._write() as c:
            for cols, group in groups.items():
                ins = self._insert(results)
                c.execute(ins.on_conflict_do_update(index_elements=["run_id", "case_id"],
                                                    set_={k: ins.excluded[k] for k in cols if k not in ("run_id", "case_id")}),
                          group)

    def finish(self, run_id: str) -> None:
        with self._write() as c:
            c.execute(sa.update(runs).where(runs.c.id == run_id).values(finished=now()))

    def results(self, run_id: str) -> pd.DataFrame:
        """Per-case results joined with the cohort's cases (cases not yet run have status 'pending')."""
        run = self.run(run_id)
        res = self._frame(sa.select(results).where(results.c.run_id == run_id))
        df = self.cases(run["cohort_id"]).merge(res.drop(columns=["run_id", "updated"]), on="case_id", how="left")
        df["status"] = df["status"].fillna("pending")
        return df

    def counts(self, run_id: str) -> dict:
        q = sa.select(results.c.status, sa.func.count()).where(results.c.run_id == run_id).group_by(results.c.status)
        with self._read() as c:
            return {status: n for status, n in c.execute(q)}


def copy_database(src: Store, dst: Store, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy every table of ``src`` into ``dst``, which must hold no study data: one consistent read of the
    source and one write transaction on the destination, so a failed copy leaves the destination empty.
    Returns the rows copied per table."""
    if src.url == dst.url:
        raise InputError(f"{src.label}: copy a study database to another database, not onto itself.")
    counts = {}
    with src._read(snapshot=True) as s, dst._write() as d:
        full = [t.name for t in DATA_TABLES if d.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()]
        if full:
            raise InputError(f"{dst.label} already holds study data (table {full[0]}); copy into a new, empty database.")
        for t in DATA_TABLES:
            n = 0
            for chunk in s.execute(sa.select(t).execution_options(yield_per=2000)).partitions():
                d.execute(t.insert(), [dict(r._mapping) for r in chunk])
                n += len(chunk)
            counts[t.name] = n
            if progress:
                progress(t.name, n)
        if dst.pg:  # copied ids: the sequences continue after them
            for t in (audit, login_failures):
                d.execute(sa.select(sa.func.setval(sa.func.pg_get_serial_sequence(t.name, "id"),
                                                   sa.select(sa.func.coalesce(sa.func.max(t.c.id), 0) + 1).scalar_subquery(),
                                                   False)))
    return counts


def _plain(v):
    """A value both drivers store: numpy scalars as int/float, NaN as NULL, and text without NUL characters
    (PostgreSQL refuses them; U+FFFD takes their place on both backends)."""
    if v is None:
        return None
    if isinstance(v, str):
        return v.replace("\x00", "\ufffd") if "\x00" in v else v
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def _clean(row: dict) -> dict:
    """:func:`_plain` for every value of a row."""
    return {k: _plain(v) for k, v in row.items()}
