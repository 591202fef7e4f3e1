"""The class queue is fair: every run has an owner; one workspace (or one client address)
has at most a few runs in the class queue, its others wait in its own line, so a 50-seed
repeat never pushes a classmate's run back; too many waiting in all is refused in one line."""
import threading

import pytest

from xray_core.train.scheduler import Busy, Scheduler

from .conftest import wait_for


def _acquire_in_thread(sched, job_id, cancel, **kw):
    out = []
    t = threading.Thread(target=lambda: out.append(sched.acquire(job_id, cancel, **kw)), daemon=True)
    t.start()
    return t, out


def test_a_workspace_holds_at_most_per_owner_places_in_the_class_queue():
    sched = Scheduler(cap=1, max_queue=60, per_owner=2, per_client=0, max_pending=100)
    cancel = threading.Event()
    assert sched.acquire("run", cancel, owner="someone")          # the trainer is busy
    greedy = [_acquire_in_thread(sched, f"g{i}", cancel, owner="greedy") for i in range(10)]
    assert wait_for(lambda: sched.status()["waiting"] == 2 and sched.status()["held"] == 8)
    late, _ = _acquire_in_thread(sched, "classmate", cancel, owner="classmate")
    # the classmate comes right after greedy's two queued runs, not after all ten
    assert wait_for(lambda: sched.position("classmate") == 3)
    assert sched.position("g9") > sched.position("classmate")
    cancel.set()
    for t, _ in greedy:
        t.join(10)
    late.join(10)
    sched.release("run")
    assert sched.status() == {"cap": 1, "running": 0, "waiting": 0, "held": 0}


def test_a_workspaces_runs_start_in_its_own_order():
    sched = Scheduler(cap=1, per_owner=1, per_client=0)
    cancel = threading.Event()
    order = []
    assert sched.acquire("a0", cancel, owner="ws")
    threads = []
    for i in range(1, 4):
        t = threading.Thread(target=lambda i=i: (sched.acquire(f"a{i}", cancel, owner="ws"), order.append(i)),
                             daemon=True)
        t.start()
        threads.append(t)
        assert wait_for(lambda i=i: sched.position(f"a{i}") is not None)
    for i in range(0, 3):
        sched.release(f"a{i}")
        assert wait_for(lambda i=i: len(order) == i + 1)
    assert order == [1, 2, 3]
    sched.release("a3")


def test_a_client_address_is_capped_across_workspaces():
    sched = Scheduler(cap=1, per_owner=5, per_client=2, max_pending=100)
    cancel = threading.Event()
    assert sched.acquire("busy", cancel, owner="x")
    # one browser opening new workspace links still counts as one client
    ts = [_acquire_in_thread(sched, f"c{i}", cancel, owner=f"ws{i}", client="10.0.0.7") for i in range(4)]
    assert wait_for(lambda: sched.status()["waiting"] == 2 and sched.status()["held"] == 2)
    cancel.set()
    for t, _ in ts:
        t.join(10)
    sched.release("busy")


def test_too_many_waiting_runs_of_one_workspace_are_refused_in_one_line():
    sched = Scheduler(cap=1, per_owner=1, per_client=0, max_pending=3)
    cancel = threading.Event()
    assert sched.acquire("r0", cancel, owner="ws")
    ts = [_acquire_in_thread(sched, f"r{i}", cancel, owner="ws") for i in (1, 2)]
    assert wait_for(lambda: sched.pending("ws") == 3)
    with pytest.raises(Busy) as e:
        sched.acquire("r3", cancel, owner="ws")
    assert "3 runs waiting or training" in str(e.value) and "\n" not in str(e.value)
    cancel.set()
    for t, _ in ts:
        t.join(10)


def test_a_cancelled_run_leaves_its_owners_line():
    sched = Scheduler(cap=1, per_owner=1, per_client=0)
    keep, drop = threading.Event(), threading.Event()
    assert sched.acquire("first", keep, owner="ws")
    t, out = _acquire_in_thread(sched, "second", drop, owner="ws")
    assert wait_for(lambda: sched.status()["held"] == 1)
    drop.set()
    t.join(10)
    assert out == [False] and sched.status()["held"] == 0 and sched.pending("ws") == 1
    sched.release("first")
    assert sched.pending("ws") == 0
