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

import hashlib
import hmac
import json
import secrets
import sys
import time

from .errors import KneeageError
from .store import Store, home, now, write_private

MIN_LENGTH = 10
CLIENT_MAX, WINDOW_S, DAY_S = 10, 300, 86_400
TARGET_MAX, TARGET_DELAY_CAP_S = 3 * CLIENT_MAX, 60


class AccessError(KneeageError):
    """A code or password was refused."""


def scrypt_hash(secret: str, salt: str, cost: int = 2**14) -> str:
    """The one secret hash of kneeage (PI password: cost 2**14; reader codes, which carry 72 random bits
    and are checked on sign-in only: 2**12)."""
    return hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=cost, r=8, p=1).hex()


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
        write_private(f, token)
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
    write_private(_file(), json.dumps({"pi_hash": scrypt_hash(new, salt), "salt": salt, "changed": now()}))
    _token_file().unlink(missing_ok=True)  # spent


def _matches(password: str) -> bool:
    d = json.loads(_file().read_text())
    return hmac.compare_digest(scrypt_hash(password or "", d["salt"]), d["pi_hash"])


def check_pi_password(store: Store, password: str, clients: tuple[str, ...] = (), clock=time.time) -> None:
    """Raise AccessError unless the password is right (and neither this client nor the PI is locked out)."""
    if not pi_configured():
        raise AccessError("No PI password is set yet; set one first.")
    check_not_locked(store, "pi", clients, clock)
    if not _matches(password):
        record_failure(store, "pi", clients, clock)
        raise AccessError("Wrong PI password.")
