"""Accounts through the pages (AppTest, issue 25 item 4): how xray_ui/session.py binds a
signed-in account's workspace, refuses a bound workspace's link to anyone else, and how
the Class board makes a listed account a teacher; without [auth] nothing changes and no
sign-in shows. The sign-in itself (st.login against a real provider) is
tests/test_browser_accounts.py; here the signed-in account is what xray_ui.accounts.account
returns, so the binding logic is tested on its own."""
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from xray_core.runs import accounts
from xray_core.runs.store import get_store
from xray_ui import accounts as ui_accounts

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
BOARD = "pages/6_Class_board.py"
ISS = "https://login.school.example"
AUTH = {"redirect_uri": "http://127.0.0.1:8501/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "xray-lab", "client_secret": "s3cret",
        "server_metadata_url": ISS + "/.well-known/openid-configuration"}


def account(sub, email):
    return accounts.from_claims({"iss": ISS, "sub": sub, "email": email, "email_verified": True})


@pytest.fixture
def signed_in(monkeypatch):
    """Who the next page runs are signed in as (None: nobody)."""
    who = {"acct": None}
    monkeypatch.setattr(ui_accounts, "account", lambda: who["acct"])

    def as_(acct):
        who["acct"] = acct
    return as_


def run(page=None, ws=None, secrets=None):
    """A new browser session on the Train page (then `page`), optionally with ?ws=…"""
    st.cache_resource.clear()
    app = AppTest.from_file(APP, default_timeout=120)
    if ws is not None:
        app.query_params["ws"] = ws
    if secrets:
        for k, v in secrets.items():
            app.secrets[k] = v
    app.run()
    if page:
        app.switch_page(page).run()
    assert not app.exception, app.exception
    return app


def link_ws(app):
    v = app.query_params.get("ws")
    return (v[0] if isinstance(v, list) else v) if v else None


def texts(elements):
    return " ".join(str(e.value) for e in elements)


def test_without_auth_there_is_no_sign_in_and_link_keys_work_as_before():
    app = run()
    ws = link_ws(app)
    assert ws and not ui_accounts.configured()
    assert not [b for b in app.button if b.key in ("account_sign_in", "account_sign_out")]
    again = run(ws=ws)                        # the link opens its workspace, as before
    assert link_ws(again) == ws and not again.error


def test_with_auth_configured_a_signed_out_visitor_sees_sign_in():
    app = run(secrets={"auth": AUTH})
    assert [b.label for b in app.button if b.key == "account_sign_in"] == ["Sign in"]
    assert link_ws(app)                       # not signed in: a link-key workspace, as before
    half = run(secrets={"auth": {"redirect_uri": AUTH["redirect_uri"]}})   # not a usable [auth]
    assert not [b for b in half.button if b.key == "account_sign_in"]
    provider = {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}
    named = run(secrets={"auth": {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"],
                                  "school": provider}})                  # one [auth.school] provider
    assert [b.label for b in named.button if b.key == "account_sign_in"] == ["Sign in"]


def test_a_signed_in_account_keeps_its_workspace_without_a_key_in_the_link(signed_in):
    ada = account("s-ada", "ada@school.example")
    signed_in(ada)
    first = run()
    ws = first.session_state["xray_ws"]
    assert link_ws(first) is None                                   # no key in the link
    assert get_store().account_workspace(ada.id) == ws and get_store().workspace_account(ws) == ada.id
    assert run().session_state["xray_ws"] == ws                     # a new session: the same workspace
    # an old link key while signed in: the account's workspace, a notice, the key dropped
    plain = get_store().issue_workspace()
    app = run(ws=plain)
    assert app.session_state["xray_ws"] == ws and link_ws(app) is None
    assert "account's workspace" in texts(app.warning)
    # signed out (a new session): the bound workspace's link opens nothing, in one error line
    signed_in(None)
    eve = run(ws=ws)
    assert link_ws(eve) not in (None, ws) and eve.session_state["xray_ws"] != ws
    assert len(eve.error) == 1 and "belongs to an account" in eve.error[0].value
    # another account with the link: its own workspace, never Ada's
    signed_in(account("s-bob", "bob@school.example"))
    bob = run(ws=ws)
    assert bob.session_state["xray_ws"] not in (None, ws) and link_ws(bob) is None
    # and a link-key workspace still opens from its link for someone signed out
    signed_in(None)
    assert link_ws(run(ws=plain)) == plain


def test_a_session_that_signs_out_leaves_the_account_workspace_behind(signed_in):
    ada = account("s-ada", "ada@school.example")
    signed_in(ada)
    app = run()
    ws = app.session_state["xray_ws"]
    signed_in(None)                           # the same session, the cookie gone
    app.run()
    assert app.session_state["xray_ws"] != ws and link_ws(app) == app.session_state["xray_ws"]
    bob = account("s-bob", "bob@school.example")
    signed_in(ada)
    app.run()
    assert app.session_state["xray_ws"] == ws
    signed_in(bob)                            # another account in the same session: its own workspace
    app.run()
    assert app.session_state["xray_ws"] == get_store().account_workspace(bob.id) != ws


def test_a_listed_account_is_a_teacher_on_the_class_board_without_the_password(signed_in, monkeypatch):
    monkeypatch.setenv("XRAY_LAB_TEACHER_PASSWORD", "a-long-teacher-password-123")
    monkeypatch.setenv("XRAY_LAB_TEACHERS", "grace@school.example")
    signed_in(account("s-ada", "ada@school.example"))
    student = run(BOARD)
    assert "Teacher view" not in texts(student.info)
    assert [t for t in student.text_input if t.key == "teacher_password"]      # asked for the password
    signed_in(account("s-grace", "Grace@school.example"))
    teacher = run(BOARD)
    assert "Teacher view" in texts(teacher.info)
    assert not [t for t in teacher.text_input if t.key == "teacher_password"]
    assert [b for b in teacher.button if b.key == "class_open"]
    monkeypatch.delenv("XRAY_LAB_TEACHER_PASSWORD")                         # no password at all: still
    assert "Teacher view" in texts(run(BOARD).info)

