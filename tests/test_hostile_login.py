"""Issue 23, item 3: the teacher password cannot be guessed at speed.

The delay logic (xray_ui/throttle.py) with a fake clock, then the Class board page in
AppTest: a wrong password makes the next attempt wait, an attempt during the wait is
refused without being checked (even the right password), and failures are logged.
tests/test_browser_hostile.py does the same in a real browser."""
import logging

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from xray_ui import throttle
from xray_ui.throttle import MAX_S, Throttle, client_key, delay_after

from .test_app_train import APP

PASSWORD = "correct horse battery staple, but longer"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_the_delay_grows_per_failure_up_to_a_cap():
    assert [delay_after(n) for n in range(0, 9)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert delay_after(10_000) == MAX_S


def test_an_attempt_during_the_delay_waits_and_the_delay_grows():
    clock = Clock()
    t = Throttle(clock)
    keys = ["session:a", "client:10.0.0.7"]
    assert t.wait(keys) == 0
    assert t.failed(keys) == 1
    assert t.wait(keys) == pytest.approx(1)
    clock.t += 1
    assert t.wait(keys) == 0
    assert t.failed(keys) == 2 and t.wait(keys) == pytest.approx(2)


def test_a_new_session_of_the_same_client_waits_too_and_another_client_does_not():
    clock = Clock()
    t = Throttle(clock)
    for _ in range(5):
        clock.t += t.wait(["session:a", "client:X"])
        t.failed(["session:a", "client:X"])
    assert t.wait(["session:new-tab", "client:X"]) == pytest.approx(16)     # per client
    assert t.wait(["session:a", "client:Y"]) == pytest.approx(16)           # per session
    assert t.wait(["session:b", "client:Y"]) == 0


def test_200_guesses_take_hours_not_seconds():
    clock = Clock()
    t = Throttle(clock)
    keys = ["session:s", "client:c"]
    for _ in range(200):
        clock.t += t.wait(keys)       # a guesser that waits exactly as long as it must
        t.failed(keys)
    assert clock.t - 1000.0 > 3 * 3600


def test_success_clears_and_old_failures_are_forgotten():
    clock = Clock()
    t = Throttle(clock)
    t.failed(["client:c"])
    t.failed(["client:c"])
    t.succeeded(["client:c"])
    assert t.wait(["client:c"]) == 0 and t.failures("client:c") == 0
    t.failed(["client:d"])
    clock.t += throttle.FORGET_S + 1
    assert t.failures("client:d") == 0


def test_memory_is_bounded_under_a_flood_of_clients(monkeypatch):
    monkeypatch.setattr(throttle, "MAX_KEYS", 100)
    t = Throttle(Clock())
    for i in range(1000):
        t.failed([f"client:{i}"])
    assert len(t._seen) == 100


@pytest.mark.parametrize("ip,fwd,want", [
    ("203.0.113.9", None, "client:203.0.113.9"),
    ("203.0.113.9", "1.2.3.4", "client:203.0.113.9"),       # not from a local proxy: the header is ignored
    ("127.0.0.1", "1.2.3.4", "client:1.2.3.4"),              # behind a proxy on this host
    ("127.0.0.1", "6.6.6.6, 198.51.100.4", "client:198.51.100.4"),   # the browser's own entry is not trusted
    ("::1", " 198.51.100.4 ", "client:198.51.100.4"),
    ("127.0.0.1", "x" * 10_000, "client:" + "x" * 64),
    (None, None, "client:unknown"),
])
def test_the_client_is_its_address_or_the_proxys_last_hop(ip, fwd, want):
    assert client_key(ip, fwd) == want


# ---- the page -------------------------------------------------------------------------------

@pytest.fixture
def board(monkeypatch, tmp_path):
    monkeypatch.setenv("XRAY_LAB_TEACHER_PASSWORD", PASSWORD)
    monkeypatch.setenv("XRAY_LAB_HOME", str(tmp_path / "home"))
    clock = Clock()
    monkeypatch.setattr(throttle, "LOGIN", Throttle(clock))

    def open_page():
        st.cache_resource.clear()
        app = AppTest.from_file(APP, default_timeout=120)
        app.run()
        return app.switch_page("pages/6_Class_board.py").run()
    return open_page, clock


def _errors(app):
    return " ".join(e.value for e in app.error)


def _teacher(app) -> bool:
    return any("Teacher view" in i.value for i in app.info)


def test_the_page_refuses_attempts_during_the_delay_even_the_right_one(board, caplog):
    open_page, clock = board
    app = open_page()
    with caplog.at_level(logging.WARNING, logger="xray_lab.teacher_login"):
        app.text_input(key="teacher_password").input("guess-1").run()
        assert "Wrong password. The next attempt is checked in 1 s" in _errors(app)
        app.text_input(key="teacher_password").input(PASSWORD).run()      # too soon: not even checked
        assert "Too many wrong passwords" in _errors(app) and not _teacher(app)
        other = open_page()                                                # another tab, same client
        other.text_input(key="teacher_password").input(PASSWORD).run()
        assert "Too many wrong passwords" in _errors(other) and not _teacher(other)
        clock.t += 1
        app.text_input(key="teacher_password").input("guess-2").run()
        assert "checked in 2 s" in _errors(app)
    logged = [r.getMessage() for r in caplog.records]
    assert sum("wrong password" in m for m in logged) == 2
    assert sum("refused unchecked" in m for m in logged) == 2
    assert not any(PASSWORD in m or "guess-" in m for m in logged)   # never the password tried
    clock.t += 2
    app.text_input(key="teacher_password").input(PASSWORD).run()
    assert not app.exception and _teacher(app)
