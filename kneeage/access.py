"""Who may do what: the PI password, secret hashing and the lock-out for wrong codes and passwords.

**PI password.** A scrypt hash with its salt in ``$KNEEAGE_HOME/access.json`` (0600; never the password).
It is never set from an anonymous page. The site sets it on the server, either with
``python -m kneeage pi-password``, or in the browser with the one-time *setup token* that the server
writes to its log and to ``$KNEEAGE_HOME/pi_setup_token`` (0600) the first time a PI page is opened
on a fresh install; the token is spent when the password is set. Changing the password needs the
current one.

**Lock-out.** Each wrong code or password is recorded under the *client* that sent it (its browser
session, and its network address when known) and under its *target* (one reader's code, or the PI
password):

- a client with ``CLIENT_MAX`` wrong attempts in a day is refused for ``WINDOW_S`` seconds after its
  last one, doubling with every further ``CLIENT_MAX`` (capped at a day). Other clients are unaffected.
- a target with ``TARGET_MAX`` (= 3 × ``CLIENT_MAX``) wrong attempts within ``WINDOW_S`` — more than
  one client can make before it is locked — is slowed, not locked: the next attempt must come
  ``2 ** (n − TARGET_MAX)`` seconds after the last wrong one, at most ``TARGET_DELAY_CAP_S``. A
  distributed guesser gets a handful of tries a minute; the legitimate user waits at most a minute.

So one stranger can lock out only their own session, never a reader or the PI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
from typing import Callable

from .config import home
from .errors import KneeageError
from .files import atomic_write
from .store import Store, now

MIN_LENGTH = 10
CLIENT_MAX, WINDOW_S, DAY_S = 10, 300, 86_400
TARGET_MAX, TARGET_DELAY_CAP_S = 3 * CLIENT_MAX, 60


class AccessError(KneeageError):
    """A code or password was refused."""


def scrypt_hash(secret: str, salt: str, cost: int = 2**14) -> str:
    """The one secret hash of kneeage (PI password: cost 2**14; reader codes, which carry 72 random bits
    and are checked on sign-in only: 2**12)."""
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=cost, r=8, p=1).hex()


def matches(secret: str, salt: str, stored_hash: str, cost: int = 2**14) -> bool:
    """Whether ``secret`` hashes to ``stored_hash`` (compared in constant time)."""
    return hmac.compare_digest(scrypt_hash(secret, salt, cost), stored_hash)


# ------------------------------------------------------------------------------------ lock-out


def check_not_locked(store: Store, target: str, clients: tuple[str, ...], clock=time.time) -> None:
    """Raise AccessError if any of the ``clients`` is locked out, or ``target`` is cooling down."""
    t = clock()
    for client in clients:
        times = store.failure_times(client, t - DAY_S)
        if len(times) >= CLIENT_MAX:
            wait = min(WINDOW_S * 2 ** (len(times) // CLIENT_MAX - 1), DAY_S)
            if t < times[-1] + wait:
                raise AccessError(f"Too many wrong attempts from this browser; try again in {_minutes(times[-1] + wait - t)}.")
    times = store.failure_times(target, t - WINDOW_S)
    if len(times) >= TARGET_MAX:
        wait = min(2 ** (len(times) - TARGET_MAX), TARGET_DELAY_CAP_S)
        if t < times[-1] + wait:
            raise AccessError(f"Many wrong attempts were made on this code or password; try again in {wait - (t - times[-1]):.0f} s.")


def record_failure(store: Store, target: str, clients: tuple[str, ...], clock=time.time) -> None:
    store.add_login_failures(clock(), (target, *clients))


def attempt(store: Store, target: str, clients: tuple[str, ...], right: Callable[[], bool], refusal: str,
            clock=time.time) -> None:
    """One sign-in under the lock-out: refused while the client is locked out or the target cools down;
    a wrong one (``right()`` is False) is recorded against both and refused with ``refusal``."""
    check_not_locked(store, target, clients, clock)
    if not right():
        record_failure(store, target, clients, clock)
        raise AccessError(refusal)


def _minutes(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} minute(s)"


# --------------------------------------------------------------------------------- PI password


def _file():
    return home() / "access.json"


def _token_file():
    return home() / "pi_setup_token"


def pi_configured() -> bool:
    return _file().exists()


def setup_token_hint() -> str:
    """Make the one-time setup token if there is none yet (written 0600 and to the server log), and say
    where the PI finds it. The token itself never reaches a page."""
    f = _token_file()
    if not f.exists():
        token = secrets.token_urlsafe(12)
        atomic_write(f, token, private=True)
        print(f"kneeage: one-time PI setup token: {token} (also in {f})", file=sys.stderr, flush=True)
    return (f"Set it on the server with `python -m kneeage pi-password`, or enter the one-time setup token that "
            f"this server printed in its log (also in {f}, readable only by the account that runs kneeage).")


def set_pi_password(new: str, current: str | None = None, setup_token: str | None = None,
                    store: Store | None = None, clients: tuple[str, ...] = ()) -> None:
    """Set the PI password. A new one needs the current password; the first one needs either the setup
    token (browser) or nothing (``setup_token=None``: the server's command line). With a ``store``, a
    wrong password or token counts toward the lock-out like a wrong sign-in."""
    if store is not None:
        check_not_locked(store, "pi", clients)
    try:
        if pi_configured():
            if current is None or not _matches(current):
                raise AccessError("The current PI password is wrong; the password was not changed.")
        elif setup_token is not None:
            f = _token_file()
            if not f.exists() or not hmac.compare_digest(setup_token.strip().encode(), f.read_text().strip().encode()):
                raise AccessError("The setup token is wrong; find it in the server log or in the study folder.")
    except AccessError:
        if store is not None:
            record_failure(store, "pi", clients)
        raise
    if len(new or "") < MIN_LENGTH:
        raise AccessError(f"Choose a PI password of at least {MIN_LENGTH} characters.")
    salt = secrets.token_hex(16)
    atomic_write(_file(), json.dumps({"pi_hash": scrypt_hash(new, salt), "salt": salt, "changed": now()}), private=True)
    _token_file().unlink(missing_ok=True)  # spent


def _matches(password: str) -> bool:
    d = json.loads(_file().read_text())
    return matches(password or "", d["salt"], d["pi_hash"])


def check_pi_password(store: Store, password: str, clients: tuple[str, ...] = (), clock=time.time) -> None:
    """Raise AccessError unless the password is right (and neither this client nor the PI is locked out)."""
    if not pi_configured():
        raise AccessError("No PI password is set yet; set one first.")
    attempt(store, "pi", clients, lambda: _matches(password), "Wrong PI password.", clock)


# ------------------------------------------------------------------------------ signed sessions

SESSION_HOURS = 12  # a reading session: a signed token keeps the reader signed in across reloads this long


def _session_key() -> bytes:
    """The server's key for signing session tokens ($KNEEAGE_HOME/session_key, 0600, made on first use).
    Every app server sharing the study folder shares it; deleting it signs every reader out."""
    f = home() / "session_key"
    if not f.exists():
        atomic_write(f, secrets.token_hex(32), private=True)
    return bytes.fromhex(f.read_text().strip())


def sign(payload: dict, hours: float = SESSION_HOURS, clock=time.time) -> str:
    """A signed, expiring token for ``payload`` (JSON-able): base64url(JSON) "." HMAC-SHA256. Not secret (it
    can be read), but it cannot be made or altered without the server's key."""
    body = base64.urlsafe_b64encode(json.dumps(payload | {"exp": int(clock() + hours * 3600)},
                                               separators=(",", ":")).encode()).decode().rstrip("=")
    mac = hmac.new(_session_key(), body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def verify(token: str | None, clock=time.time) -> dict | None:
    """The payload of a token this server signed and that has not expired, else None."""
    if not token or token.count(".") != 1 or len(token) > 2000:
        return None
    body, mac = token.split(".")
    good = hmac.new(_session_key(), body.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, good):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int) or payload["exp"] < clock():
        return None
    return payload


def fingerprint(secret_hash: str) -> str:
    """A keyed fingerprint of a stored code hash: a session token names the code it was opened with by this,
    so a re-issued code ends the session, without the token carrying any part of the hash."""
    return hmac.new(_session_key(), secret_hash.encode(), hashlib.sha256).hexdigest()[:16]
