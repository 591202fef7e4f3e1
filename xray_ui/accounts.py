"""Sign-in with the school's OpenID Connect provider (issue 25, item 4), through Streamlit's
own `st.login` / `st.logout` / `st.user`, configured in `.streamlit/secrets.toml` as Streamlit
documents (README "Accounts (OpenID Connect)"):

    [auth]
    redirect_uri = "https://lab.school.example/oauth2callback"
    cookie_secret = "…long random…"
    client_id = "…"
    client_secret = "…"
    server_metadata_url = "https://login.school.example/.well-known/openid-configuration"

(or one named provider, `[auth.school]` with the last three). Without such a section nothing
here shows and the pages keep today's link-key workspaces. Signed in, the workspace is the
account's (xray_core/runs/accounts.py, xray_ui/session.workspace) and an account listed in
XRAY_LAB_TEACHERS is a teacher on the Class board without the password.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import streamlit as st

from xray_core.errors import log_once
from xray_core.runs import accounts
from xray_core.runs.accounts import Account

_log = logging.getLogger("xray_lab.accounts")
_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def _auth_section() -> Mapping | None:
    try:   # no secrets.toml at all is the usual case: a probe that never raises nor prints
        if not st.secrets.load_if_toml_exists():
            return None
        auth = st.secrets.get("auth")
    except Exception as e:   # a secrets.toml that does not parse: no sign-in, said in the log (once)
        log_once(_log, "secrets.toml: cannot read [auth], sign-in is off", e)
        return None
    return auth if isinstance(auth, Mapping) else None


def provider() -> str | None | bool:
    """How st.login is called: None for the [auth] section's own provider, a name for the one
    [auth.NAME] provider, False when sign-in is not configured."""
    auth = _auth_section()
    if auth is None or not (auth.get("redirect_uri") and auth.get("cookie_secret")):
        return False
    if all(auth.get(k) for k in _PROVIDER_KEYS):
        return None
    named = [k for k, v in auth.items() if isinstance(v, Mapping) and all(v.get(p) for p in _PROVIDER_KEYS)]
    return named[0] if len(named) == 1 else False


def configured() -> bool:
    return provider() is not False


def signed_in() -> bool:
    # the claims as a dict: a session without a user (AppTest) has no is_logged_in at all
    return configured() and bool(st.user.to_dict().get("is_logged_in"))


def account() -> Account | None:
    """The signed-in account (None: sign-in off, not signed in, or a token naming nobody)."""
    return accounts.from_claims(st.user.to_dict()) if signed_in() else None


def sign_in_out() -> None:
    """The sidebar's Sign in / Sign out, only where sign-in is configured."""
    which = provider()
    if which is False:
        return
    if not signed_in():
        if st.sidebar.button("Sign in", key="account_sign_in", icon=":material/login:",
                             help="With your school account: your runs are kept with it, no link to keep."):
            if which:
                st.login(which)
            else:
                st.login()
        return
    acct = account()
    who = acct.shown if acct else "an account the app cannot use (no subject in its token)"
    # the provider's text as code: never Markdown, and an address does not turn into a mailto link
    who = " ".join(who.replace("`", "'").split())[:120]
    st.sidebar.caption(f"Signed in as `{who}`" + (" · teacher" if acct and acct.teacher else ""))
    if st.sidebar.button("Sign out", key="account_sign_out", icon=":material/logout:"):
        st.logout()
