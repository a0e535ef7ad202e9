"""Shared fixtures. kneeage is installed (editable, from requirements.txt); pytest puts the checkout on sys.path
for ``tests`` and ``pages``. Importing kneeage sets HF_HUB_OFFLINE=1."""

import itertools
import os
import tempfile
import uuid

import pytest

from kneeage.config import PROJECT_DIR

ROOT = PROJECT_DIR  # the checkout: app.py, pages/, models/


def new_study(home, monkeypatch, protocol: dict):
    """A reader study set up from ``protocol`` in a fresh kneeage home: (store, study id)."""
    from kneeage import readerstudy
    from kneeage.store import Store

    monkeypatch.setenv("KNEEAGE_HOME", str(home))
    store = Store()
    return store, readerstudy.setup_study(store, readerstudy.Protocol.from_dict(protocol))

# ------------------------------------------------------------------------ database backends
# The store, validation, reader-study, crash-safety and concurrency tests run against SQLite and a real
# PostgreSQL server: $KNEEAGE_TEST_PG_URL (a server where its user may create databases; .ci/run starts
# one), else one this session starts from Debian's binaries (tests/pg.py) and stops at the end.

BACKENDS = ["sqlite", "postgresql"]


class PgServer:
    """A PostgreSQL server the tests may create databases on."""

    def __init__(self, url: str):
        self.url = url
        self.made: list[str] = []

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg
        from sqlalchemy import make_url

        name = f"kneeage_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'create database "{name}"')
        self.made.append(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop the databases this session made (on a server that outlives it)."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            for name in self.made:
                c.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture(scope="session")
def pg_server():
    url = os.environ.get("KNEEAGE_TEST_PG_URL")
    if url:
        server = PgServer(url)
        yield server
        server.drop_all()
        return
    from tests import pg

    if pg.binaries() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and KNEEAGE_TEST_PG_URL is not set")
    d = tempfile.mkdtemp(prefix="kneeage-pg-")
    try:
        yield PgServer(pg.start(d))
    finally:
        pg.stop(d)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def new_db(backend, request, tmp_path_factory):
    """A factory of fresh, empty databases of the backend under test: a SQLite file path or a PostgreSQL URL."""
    if backend == "sqlite":
        d, n = tmp_path_factory.mktemp("db"), itertools.count()
        return lambda: str(d / f"k{next(n)}.db")
    return request.getfixturevalue("pg_server").new_database
