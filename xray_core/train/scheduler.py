"""The class queue: at most `cap` runs train at once, the rest wait in FIFO order.

A class server is shared, so the queue is fair by construction:
- every run has an owner (its workspace) and, from a browser, a client (its address);
- an owner (or client) has at most `per_owner` (`per_client`) runs in the class queue or
  training; its further runs wait in the owner's own line and enter the class queue as
  its earlier ones finish, so one student's 50-seed repeat never pushes the class back;
- refused at once, in one line (`Busy`): a run when the class queue is full, an owner's
  run beyond `max_pending` waiting in all, and a second run of an owner that asks to be
  alone (the Train page: one run per workspace at a time).
"""
from __future__ import annotations

import os
import threading
from collections import deque

from xray_core import settings
from xray_core.errors import XrayLabError

QUEUE_POLL_S = 1.0


class Busy(XrayLabError):
    """The server refuses a run now (queue full, or its owner has too many)."""


def default_cap() -> int:
    return settings.get("XRAY_LAB_MAX_JOBS") or max(1, os.cpu_count() or 1)


class Scheduler:
    def __init__(self, cap: int | None = None, max_queue: int | None = None, *,
                 per_owner: int | None = None, per_client: int | None = None, max_pending: int | None = None):
        self.cap = cap or default_cap()
        self.max_queue = max_queue or settings.get("XRAY_LAB_MAX_QUEUE")
        self.per_owner = per_owner or settings.get("XRAY_LAB_QUEUE_PER_WORKSPACE")
        self.per_client = settings.get("XRAY_LAB_QUEUE_PER_CLIENT") if per_client is None else per_client
        self.max_pending = max_pending or settings.get("XRAY_LAB_PENDING_PER_WORKSPACE")
        self._cond = threading.Condition()
        self._held: deque[str] = deque()      # waiting for their owner's / client's turn
        self._waiting: deque[str] = deque()   # the class queue
        self._running: set[str] = set()
        self._owner: dict[str, str] = {}      # job id -> owner, while held, queued or running
        self._client: dict[str, str] = {}     # job id -> client, likewise

    # -- counting (under the lock) --
    def _active(self, ids: dict[str, str], who: str) -> int:
        """Runs of `who` in the class queue or training."""
        return sum(1 for j, o in ids.items() if o == who and j not in self._held)

    def _my_turn(self, job_id: str) -> bool:
        owner, client = self._owner.get(job_id), self._client.get(job_id)
        for j in self._held:          # the first held run of its owner and of its client goes first
            if j == job_id:
                break
            if (owner is not None and self._owner.get(j) == owner) or (
                    client is not None and self._client.get(j) == client):
                return False
        if owner is not None and self._active(self._owner, owner) >= self.per_owner:
            return False
        if client is not None and self.per_client and self._active(self._client, client) >= self.per_client:
            return False
        return len(self._waiting) < self.max_queue

    def acquire(self, job_id: str, cancelled: threading.Event, owner: str | None = None,
                client: str | None = None, alone: bool = False) -> bool:
        """Block until the run may train; False if it was cancelled while waiting.
        Busy (at once, before waiting) when it cannot be taken (see the module's text)."""
        with self._cond:
            if owner is not None:
                mine = sum(1 for o in self._owner.values() if o == owner)
                if alone and mine:
                    raise Busy("You already have a run queued or training: stop it or wait for it to finish.")
                if mine >= self.max_pending:
                    raise Busy(f"Your workspace already has {mine} runs waiting or training (the server's "
                               f"limit is {self.max_pending}): cancel some or wait for them to finish.")
            if len(self._waiting) >= self.max_queue:
                raise Busy(f"The server is busy: {len(self._waiting)} runs are waiting. "
                           "Try again in a few minutes.")
            if owner is not None:
                self._owner[job_id] = owner
            if client is not None:
                self._client[job_id] = client
            self._held.append(job_id)
            admitted = False
            try:
                while not self._my_turn(job_id):
                    if cancelled.is_set():
                        return False
                    self._cond.wait(timeout=QUEUE_POLL_S)
                self._held.remove(job_id)
                self._waiting.append(job_id)
                # Woken at once when a run ends (notify_all); the timeout only bounds how late a
                # Stop of a queued run is seen. 1 s, not 0.1: a class of 30 queues 28 waiting
                # threads, each waking would take the server's GIL.
                while not (self._waiting[0] == job_id and len(self._running) < self.cap):
                    if cancelled.is_set():
                        return False
                    self._cond.wait(timeout=QUEUE_POLL_S)
                if cancelled.is_set():
                    return False
                self._running.add(job_id)
                admitted = True
                return True
            finally:
                if job_id in self._held:
                    self._held.remove(job_id)
                if job_id in self._waiting:
                    self._waiting.remove(job_id)
                if not admitted:
                    self._owner.pop(job_id, None)
                    self._client.pop(job_id, None)
                self._cond.notify_all()

    def free(self, job_id: str) -> None:
        """The run's trainer is done: the next queued run may start while this one finishes
        here (writes its record). Still counted for its owner until release()."""
        with self._cond:
            self._running.discard(job_id)
            self._cond.notify_all()

    def release(self, job_id: str) -> None:
        with self._cond:
            self._running.discard(job_id)
            self._owner.pop(job_id, None)
            self._client.pop(job_id, None)
            self._cond.notify_all()

    def position(self, job_id: str) -> int | None:
        """1 = next to start; runs in their owner's line count after the class queue; None
        when not waiting."""
        with self._cond:
            if job_id in self._waiting:
                return self._waiting.index(job_id) + 1
            if job_id in self._held:
                return len(self._waiting) + self._held.index(job_id) + 1
            return None

    def pending(self, owner: str) -> int:
        """Runs of `owner` waiting or training."""
        with self._cond:
            return sum(1 for o in self._owner.values() if o == owner)

    def status(self) -> dict:
        with self._cond:
            return {"cap": self.cap, "running": len(self._running), "waiting": len(self._waiting),
                    "held": len(self._held)}


SCHEDULER = Scheduler()
