"""The teacher login slows down after wrong passwords. Pure (no streamlit): the Class board
page (pages/6_Class_board.py) keeps one Throttle for the server process.

Every wrong password makes the next attempt wait longer, counted both per browser session
and per client (its address; behind a reverse proxy on this host, the address the proxy
appended to X-Forwarded-For): 1 s after the first, then 2, 4, 8 … up to 60 s. An attempt
that comes before its wait is over is refused WITHOUT checking the password, so neither a
script on one connection nor many tabs of one client guess faster than that (200 guesses
took 29 s before; now they take over three hours). A right password clears its session's
and client's counts; counts are forgotten after 15 minutes without a failure. No thread
sleeps: a refused attempt costs the server nothing.

    t = Throttle()
    t.wait(keys) -> float         seconds before an attempt from these keys is checked (0: now)
    t.failed(keys) -> float       record a wrong password; returns the new wait
    t.succeeded(keys)
    client_key(ip, forwarded_for) -> str
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict

BASE_S = 1.0
FACTOR = 2.0
MAX_S = 60.0
FORGET_S = 15 * 60.0
MAX_KEYS = 10_000          # sessions and clients remembered at most (oldest forgotten first)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def delay_after(failures: int) -> float:
    """The wait after `failures` wrong passwords in a row: 0, 1, 2, 4, … MAX_S seconds."""
    if failures <= 0:
        return 0.0
    return min(MAX_S, BASE_S * FACTOR ** min(failures - 1, 64))


def client_key(ip: str | None, forwarded_for: str | None) -> str:
    """Who is asking: the connection's address; when that is this host (a reverse proxy in
    front of Streamlit), the last address in X-Forwarded-For, the one the proxy itself
    appended (the ones before it are the browser's to invent). Cut to 64 characters."""
    ip = ip.strip() if isinstance(ip, str) else ""
    forwarded_for = forwarded_for if isinstance(forwarded_for, str) else None
    if forwarded_for and (not ip or ip in LOOPBACK):
        last = str(forwarded_for).split(",")[-1].strip()
        if last:
            return "client:" + last[:64]
    return "client:" + (ip[:64] or "unknown")


class Throttle:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: "OrderedDict[str, tuple[int, float]]" = OrderedDict()   # key -> (failures, last failure)

    def _count(self, key: str, now: float) -> tuple[int, float]:
        n, last = self._seen.get(key, (0, 0.0))
        if n and now - last > FORGET_S:
            self._seen.pop(key, None)
            return 0, 0.0
        return n, last

    def wait(self, keys) -> float:
        now = self._clock()
        with self._lock:
            left = 0.0
            for k in keys:
                n, last = self._count(k, now)
                left = max(left, last + delay_after(n) - now)
            return max(0.0, left)

    def failed(self, keys) -> float:
        now = self._clock()
        with self._lock:
            for k in keys:
                n, _ = self._count(k, now)
                self._seen[k] = (n + 1, now)
                self._seen.move_to_end(k)
            while len(self._seen) > MAX_KEYS:
                self._seen.popitem(last=False)
            return max((delay_after(self._seen[k][0]) for k in keys), default=0.0)

    def failures(self, key: str) -> int:
        with self._lock:
            return self._count(key, self._clock())[0]

    def succeeded(self, keys) -> None:
        with self._lock:
            for k in keys:
                self._seen.pop(k, None)


LOGIN = Throttle()      # the teacher login's, one per server process
