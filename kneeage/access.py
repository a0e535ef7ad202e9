"""The PI password: a scrypt hash with its salt in ``$KNEEAGE_HOME/access.json`` (never the password).

First run: no file → the PI page asks the PI to set a password (at least 10 characters). Changing it
needs the current one. Wrong passwords count toward a lock-out ({MAX} in {WINDOW} s) in the database.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from .errors import KneeageError
from .store import Store, home, now

MIN_LENGTH, MAX, WINDOW = 10, 10, 300


class AccessError(KneeageError):
    """A code or password was refused."""


def _file():
    return home() / "access.json"


def _hash(password: str, salt: str) -> str:
    return hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=2**14, r=8, p=1).hex()


def pi_configured() -> bool:
    return _file().exists()


def set_pi_password(new: str, current: str | None = None) -> None:
    if pi_configured():
        if current is None or not _matches(current):
            raise AccessError("The current PI password is wrong; the password was not changed.")
    if len(new or "") < MIN_LENGTH:
        raise AccessError(f"Choose a PI password of at least {MIN_LENGTH} characters.")
    salt = secrets.token_hex(16)
    f = _file()
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pi_hash": _hash(new, salt), "salt": salt, "changed": now()}))
    tmp.chmod(0o600)
    tmp.replace(f)


def _matches(password: str) -> bool:
    d = json.loads(_file().read_text())
    return hmac.compare_digest(_hash(password or "", d["salt"]), d["pi_hash"])


def check_pi_password(store: Store, password: str, clock=time.time) -> None:
    """Raise AccessError unless the password is right (and not locked out)."""
    if not pi_configured():
        raise AccessError("No PI password is set yet; set one first.")
    t = clock()
    if store.recent_failures("pi", t - WINDOW, t) >= MAX:
        raise AccessError("Too many wrong passwords; try again in a few minutes.")
    if not _matches(password):
        store.login_failure("pi", t)
        raise AccessError("Wrong PI password.")
