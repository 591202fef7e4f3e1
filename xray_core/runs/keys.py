"""Workspace keys only this server issued.

A workspace key in a link (`?ws=…`) is the only thing between a student and another
student's runs, so a link may only open a key the server handed out: any 16-64
character string used to be accepted (`?ws=aaaaaaaaaaaaaaaa` opened an empty workspace
that was then the student's to fill, and keys could be chosen to look like others').

A key is 16 random URL-safe characters followed by 16 characters of their HMAC-SHA256
under a secret kept in the home (`$XRAY_LAB_HOME/workspace.secret`, 32 random bytes,
0600, made once): checking one needs no database and no table that a stream of new
visitors could fill. Replicas that share a run store should share the home (or this
file). Keys issued before keys were signed (22 random characters) keep working when the
run store already holds runs under them (`RunStore.has_workspace`).

    issue(home) -> str              a new signed key
    signed(key, home) -> bool       whether `key` carries this server's signature
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
from pathlib import Path

SECRET_FILE = "workspace.secret"
RANDOM_CHARS = 16
SIG_CHARS = 16
KEY_CHARS = RANDOM_CHARS + SIG_CHARS
_lock = threading.Lock()
_secrets: dict[str, bytes] = {}


def make_home(home: str | Path) -> Path:
    """The home folder, created private (0700) when it does not exist yet."""
    home = Path(home).expanduser()
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    return home


def _secret(home: str | Path) -> bytes:
    home = make_home(home)
    path = home / SECRET_FILE
    with _lock:
        if str(path) in _secrets:
            return _secrets[str(path)]
        try:   # first server to get here writes it; the others (and later starts) read it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = None
        if fd is not None:
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
        data = path.read_bytes()
        if len(data) < 32:    # a half-written file of a crashed start: refuse to sign with it
            raise OSError(f"{SECRET_FILE} in the home is damaged (delete it: issued keys then stop working)")
        _secrets[str(path)] = data
        return data


def _sig(secret: bytes, nonce: str) -> str:
    mac = hmac.new(secret, b"xray-lab workspace\0" + nonce.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode()[:SIG_CHARS]


def issue(home: str | Path) -> str:
    nonce = secrets.token_urlsafe(12)[:RANDOM_CHARS]
    return nonce + _sig(_secret(home), nonce)


def signed(key, home: str | Path) -> bool:
    if not isinstance(key, str) or len(key) != KEY_CHARS or not key.isascii():
        return False
    return hmac.compare_digest(_sig(_secret(home), key[:RANDOM_CHARS]), key[RANDOM_CHARS:])
