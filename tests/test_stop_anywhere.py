"""Stop anywhere (issue 25, item 5): a stop asked through one RunStore (another replica) on
the same database stops a job recorded through another: the recorder polls the flag."""
import threading

import pytest

from xray_core.runs import recorder as rec_mod
from xray_core.runs import service
from xray_core.runs.recorder import record_job, recorder_for
from xray_core.runs.store import RunStore

from .conftest import wait_for
from .test_recorder import FakeJob


class StoppableJob(FakeJob):
    """A fake job that ends as "stopped" when asked, like TrainingJob.stop()."""

    def __init__(self):
        super().__init__()
        self.running = True
        self.stops = 0
        self._ended = threading.Event()

    def stop(self):
        self.stops += 1
        self.set(state="stopped", epoch=1)
        self.running = False
        self._ended.set()

    def join(self, timeout=None):
        self._ended.wait(timeout)


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(rec_mod, "POLL", 0.02)
    monkeypatch.setattr(rec_mod, "HEARTBEAT", 0.2)


def _two_replicas(url_or_none, tmp_path):
    if url_or_none is None:      # one sqlite file, two stores: two servers sharing a volume
        a = RunStore(home=tmp_path / "home")
        b = RunStore(a.url, home=tmp_path / "home")
    else:
        a = RunStore(url_or_none, home=tmp_path / "host-a")
        b = RunStore(url_or_none, home=tmp_path / "host-b")
    return a, b


def _stop_from_the_other_replica(a, b):
    job = StoppableJob()
    job.set(state="training")
    rid = record_job(a, job, "ws")
    assert wait_for(lambda: a.get(rid).state == "training", 10)
    assert job.stops == 0                                  # no flag: the recorder leaves the job alone
    # the other replica has no live job for this run: only the flag can reach it
    assert rec_mod.live_job(rid) is job
    assert service.stop_runs([rid], store=b, by="teacher") == 1
    assert b.stop_requested(rid) and a.stop_requested(rid)
    assert wait_for(lambda: job.stops == 1, 10)
    assert recorder_for(rid) is None or recorder_for(rid).join(10)
    assert wait_for(lambda: b.get(rid).state == "stopped", 10)
    assert job.stops == 1                                  # asked once, not at every poll
    assert service.stop_runs([rid], store=b) == 0          # a stopped run is skipped


def test_a_stop_asked_through_another_store_on_one_sqlite_file_stops_the_run(tmp_path, fast):
    a, b = _two_replicas(None, tmp_path)
    try:
        assert a.db_path == b.db_path
        _stop_from_the_other_replica(a, b)
    finally:
        a.close()
        b.close()


def test_a_stop_asked_on_one_postgresql_replica_stops_the_run_on_the_other(pg_url, tmp_path, fast):
    a, b = _two_replicas(pg_url, tmp_path)
    try:
        _stop_from_the_other_replica(a, b)
    finally:
        a.close()
        b.close()


def test_a_store_hiccup_does_not_stop_or_end_the_recording(tmp_path, fast, monkeypatch):
    s = RunStore(home=tmp_path / "home")
    try:
        def broken(_rid):
            raise OSError("database is locked")
        monkeypatch.setattr(s, "stop_requested", broken)
        job = StoppableJob()
        job.set(state="training")
        rid = record_job(s, job, "ws")
        assert wait_for(lambda: s.get(rid).state == "training", 10)
        assert wait_for(lambda: recorder_for(rid) is not None and recorder_for(rid).error, 10)
        assert job.stops == 0 and s.get(rid).state == "training"
        job.stop()
        assert recorder_for(rid) is None or recorder_for(rid).join(10)
        assert s.get(rid).state == "stopped"
    finally:
        s.close()


def test_unknown_and_finished_runs_are_skipped(tmp_path):
    s = RunStore(home=tmp_path / "home")
    try:
        from xray_core.config import RunConfig
        r = s.create_run("ws", RunConfig(epochs=2))
        s.finish(r.id, "finished")
        assert service.stop_runs(["nope", r.id], store=s) == 0
        assert not s.stop_requested(r.id)
    finally:
        s.close()
