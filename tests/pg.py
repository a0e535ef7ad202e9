"""A throwaway PostgreSQL server on the loopback address, for the tests and benches (standard library only,
so CI can run it before the virtual environment exists).

    python tests/pg.py start DIR [--durable]   # initdb into DIR, start, print the server's URL
    python tests/pg.py stop DIR                # stop it and delete DIR

Uses Debian's server binaries (``/usr/lib/postgresql/<version>/bin``, package ``postgresql``). As root it
runs the server as the unprivileged ``postgres`` account (PostgreSQL refuses to run as root). The server
trusts local connections (it listens on 127.0.0.1 only) and has one superuser, ``kneeage``. Tests run with
fsync off (they kill clients, not the server); ``--durable`` keeps PostgreSQL's default durability, as a
site's server has, for the benches.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

USER = "kneeage"


def binaries() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, or None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None
    return Path(max(found, key=lambda p: int(re.search(r"/(\d+)/bin", p).group(1)))).parent


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(directory: str | Path, durable: bool = False) -> str:
    """Create a cluster in ``directory`` (which must not exist or be empty), start it; return its URL."""
    bindir = binaries()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    owner = None
    if os.geteuid() == 0:
        owner = "postgres" if _has_user("postgres") else "nobody"
        entry = pwd.getpwnam(owner)
        os.chown(d, entry.pw_uid, entry.pw_gid)
    d.chmod(0o700)
    data = d / "data"
    subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8",
                              "--no-locale", "--no-sync"], owner), check=True, capture_output=True, text=True)
    port = _free_port()
    opts = [f"-p {port}", f"-k {d}", "-c listen_addresses=127.0.0.1", "-c max_connections=300"]
    if not durable:
        opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
    subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(d / "server.log"), "-w", "-t", "60",
                              "-o", " ".join(opts), "start"], owner), check=True, capture_output=True, text=True)
    (d / "url").write_text(url := f"postgresql://{USER}@127.0.0.1:{port}/postgres")
    return url


def stop(directory: str | Path) -> None:
    """Stop the server started in ``directory`` (if it runs) and delete the directory."""
    d = Path(directory)
    bindir = binaries()
    if bindir and (d / "data" / "postmaster.pid").exists():
        owner = pwd.getpwuid(d.stat().st_uid).pw_name if os.geteuid() == 0 and d.stat().st_uid != 0 else None
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "-w", "stop"], owner),
                       capture_output=True, text=True)
    shutil.rmtree(d, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        print(start(sys.argv[2], durable="--durable" in sys.argv[3:]))
    else:
        stop(sys.argv[2])
