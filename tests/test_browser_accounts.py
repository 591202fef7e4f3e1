"""Accounts in a real browser (issue 25, item 4): Streamlit's own st.login against a real
OpenID Connect provider started here on loopback (tests/oidc_provider.py: discovery,
authorize, token with a signed id token and the nonce, JWKS, userinfo), with a
secrets.toml in a temporary folder (`--secrets.files`: the repo's .streamlit stays as is).

A student signs in and works in the workspace bound to the account with no key in the link;
a second browser that only has that workspace's key (`?ws=…`) is refused in one line; a
teacher account listed in XRAY_LAB_TEACHERS reaches the Class board's teacher controls
without the teacher password; signing out leaves the account's workspace behind."""
import secrets

import pytest

from xray_core.presets import get_preset
from xray_core.runs import accounts
from xray_core.runs.store import RunStore

from .browser import CHROMIUM, browser, free_port, streamlit_app, wait_until, workspace_of
from .oidc_provider import OidcProvider

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")]

CLIENT_ID, CLIENT_SECRET = "xray-lab", secrets.token_urlsafe(24)
STUDENT = {"sub": "student-7", "email": "ada@school.example", "email_verified": True, "name": "Ada"}
TEACHER = {"sub": "teacher-1", "email": "Grace@School.example", "email_verified": True, "name": "Grace"}
LINKS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stSidebar"] a')).map(a => a.href)"""


def _secrets_toml(path, redirect_uri, metadata_url):
    path.write_text(f'[auth]\nredirect_uri = "{redirect_uri}"\ncookie_secret = "{secrets.token_hex(32)}"\n'
                    f'client_id = "{CLIENT_ID}"\nclient_secret = "{CLIENT_SECRET}"\n'
                    f'server_metadata_url = "{metadata_url}"\n')
    return path


def _sign_in(page, provider, user):
    provider.user = user
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").first.wait_for(timeout=60_000)


def test_sign_in_binds_the_workspace_refuses_its_link_and_makes_listed_teachers(tmp_path):
    home = tmp_path / "home"
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/oauth2callback"
    env = {"XRAY_LAB_HOME": str(home), "XRAY_LAB_ISOLATE": "0",
           "XRAY_LAB_TEACHERS": "grace@school.example, other@school.example",
           "XRAY_LAB_TEACHER_PASSWORD": secrets.token_urlsafe(24)}   # set, and never typed below
    with OidcProvider(CLIENT_ID, CLIENT_SECRET, redirect) as op, \
            streamlit_app(env, port=port, args=("--secrets.files",
                                                str(_secrets_toml(tmp_path / "secrets.toml", redirect,
                                                                  op.metadata_url)))) as server, \
            browser() as b:
        store = RunStore(home=home)
        # -- the student signs in: the workspace is the account's, the link carries no key
        ada = b.new_context().new_page()
        ada.goto(server.url, wait_until="domcontentloaded")
        ada.get_by_role("button", name="Sign in").wait_for(timeout=180_000)
        anonymous_ws = wait_until(lambda: workspace_of(ada))        # before signing in: a link key
        _sign_in(ada, op, STUDENT)
        assert op.log == ["authorize student-7", "token student-7"] and op.errors == []
        acct = accounts.account_id(op.issuer, "student-7")
        ws = wait_until(lambda: store.account_workspace(acct))
        assert ws and ws != anonymous_ws and store.workspace_account(ws) == acct
        assert workspace_of(ada) == ""
        assert not any("ws=" in href for href in ada.evaluate(LINKS_JS))
        # a run in the account's workspace shows after a reload: no key needed to find it again
        rec = store.create_run(ws, get_preset("p1-task1").config, label="Ada's first run", state="training")
        store.finish(rec.id, "stopped")
        ada.reload(wait_until="domcontentloaded")
        ada.get_by_text("Kept on the server with your account").first.wait_for(timeout=60_000)
        assert workspace_of(ada) == ""
        # her own old link while signed in: the account's workspace all the same, the key dropped
        ada.goto(f"{server.url}/?ws={anonymous_ws}", wait_until="domcontentloaded")
        ada.get_by_text("Kept on the server with your account").first.wait_for(timeout=60_000)
        assert wait_until(lambda: workspace_of(ada) == "")
        # a student is no teacher: the Class board asks for the password
        ada.goto(server.url + "/Class_board", wait_until="domcontentloaded")
        ada.get_by_text("Class board").first.wait_for(timeout=60_000)
        ada.get_by_text("Teacher", exact=True).first.wait_for(timeout=60_000)     # the password expander
        assert ada.get_by_text("Teacher view:").count() == 0

        # -- someone else with only the link is refused, in one line, and gets an empty workspace
        eve = b.new_context().new_page()
        eve.goto(f"{server.url}/?ws={ws}", wait_until="domcontentloaded")
        eve.get_by_text("That link's workspace belongs to an account").first.wait_for(timeout=120_000)
        other = wait_until(lambda: workspace_of(eve) not in ("", ws) and workspace_of(eve))
        assert other and store.workspace_account(other) is None
        assert eve.get_by_text("Runs in this workspace").count() == 0
        assert eve.get_by_text("Traceback").count() == 0
        eve.get_by_role("button", name="Sign in").wait_for(timeout=30_000)

        # -- a teacher account listed in XRAY_LAB_TEACHERS: teacher controls, no password typed
        grace = b.new_context().new_page()
        grace.goto(server.url + "/Class_board", wait_until="domcontentloaded")
        grace.get_by_role("button", name="Sign in").wait_for(timeout=120_000)
        _sign_in(grace, op, TEACHER)
        grace.get_by_text("· teacher").first.wait_for(timeout=60_000)
        grace.locator('[data-testid="stSidebar"]').get_by_text("Class board").click()
        grace.get_by_text("Teacher view:").first.wait_for(timeout=60_000)
        grace.get_by_role("button", name="Open the class experiment").wait_for(timeout=30_000)
        assert grace.get_by_label("Teacher password").count() == 0
        assert store.account_workspace(accounts.account_id(op.issuer, "teacher-1")) not in (None, ws)

        # -- signing out: the account keeps its workspace, the tab gets a link-key one
        ada.goto(server.url, wait_until="domcontentloaded")
        ada.get_by_role("button", name="Sign out").click()
        ada.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
        after = wait_until(lambda: workspace_of(ada))
        assert after and after != ws and store.account_workspace(acct) == ws
        assert op.errors == []
        store.close()
