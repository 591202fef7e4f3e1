"""Accounts (issue 25, item 4), the engine side: claims -> account, the teacher list, a
workspace bound to its account in the run store (SQLite and PostgreSQL), and a link that
names a bound workspace opening nothing for anyone else."""
import sqlite3
import threading

import pytest

from xray_core.runs import accounts, keys
from xray_core.runs.store import RunStore, StoreError

from .fixtures_data import old_run_store

ISS = "http://127.0.0.1:9/"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'home' / 'runs.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    s = RunStore(url, home=tmp_path / "home")
    yield s
    s.close()


def claims(sub="s-1", email="ada@school.example", **more):
    return {"iss": ISS, "sub": sub, "email": email, "email_verified": True, "name": "Ada", **more}


def test_an_account_is_its_issuer_and_subject_not_its_address():
    a = accounts.from_claims(claims())
    assert a.id == accounts.from_claims(claims(email="renamed@school.example")).id   # same person
    assert a.id != accounts.from_claims(claims(sub="s-2")).id
    assert a.id != accounts.from_claims({**claims(), "iss": "http://other/"}).id     # another school's s-1
    assert len(a.id) == 32 and a.email == "ada@school.example" and a.shown == "ada@school.example"
    for nobody in (None, {}, {"email": "x@y"}, {"sub": "  "}, {"sub": 7}):
        assert accounts.from_claims(nobody) is None


def test_teachers_are_the_listed_verified_addresses(monkeypatch):
    monkeypatch.delenv("XRAY_LAB_TEACHERS", raising=False)
    assert not accounts.from_claims(claims()).teacher                 # no list: nobody
    monkeypatch.setenv("XRAY_LAB_TEACHERS", " Ada@School.example , ,bob@school.example")
    assert accounts.teacher_emails() == {"ada@school.example", "bob@school.example"}
    assert accounts.from_claims(claims()).teacher
    assert accounts.from_claims(claims(email="ADA@SCHOOL.EXAMPLE")).teacher     # case ignored
    assert not accounts.from_claims(claims(email="eve@school.example")).teacher
    assert not accounts.from_claims(claims(email_verified=False)).teacher       # unverified: never
    assert not accounts.from_claims(claims(email_verified="false")).teacher
    no_flag = claims()
    del no_flag["email_verified"]                                               # Entra sends none
    assert accounts.from_claims(no_flag).teacher
    assert not accounts.from_claims(claims(email=None)).teacher


def test_an_account_keeps_one_workspace_and_its_link_opens_for_nobody_else(store):
    ada, bob = accounts.from_claims(claims()), accounts.from_claims(claims(sub="s-2", email="bob@x"))
    ws = accounts.workspace_of(ada, store)
    assert keys.signed(ws, store.home) and store.workspace_issued(ws)   # an ordinary signed key
    assert accounts.workspace_of(ada, store) == ws                       # the next sign-in finds it
    assert accounts.workspace_of(bob, store) != ws
    assert store.workspace_account(ws) == ada.id
    assert accounts.link_opens(ws, ada, store)
    assert not accounts.link_opens(ws, None, store)                      # the link alone
    assert not accounts.link_opens(ws, bob, store)                       # another account
    plain = store.issue_workspace()                                      # a link-key workspace: as before
    assert accounts.link_opens(plain, None, store) and accounts.link_opens(plain, bob, store)
    # nobody can bind a workspace another account holds, nor move an account to another one
    with pytest.raises(StoreError, match="another account"):
        store.bind_account(bob.id, ws)
    assert store.bind_account(ada.id, plain) == ws
    assert store.workspace_account(plain) is None
    for bad in ("", "a" * 65, None):
        with pytest.raises(StoreError):
            store.bind_account(bad, store.issue_workspace())
    assert store.workspace_account("../x") is None and store.workspace_account(None) is None


def test_two_first_sign_ins_at_once_end_with_one_workspace(store):
    ada = accounts.from_claims(claims())
    got, barrier = [], threading.Barrier(4)

    def sign_in():
        barrier.wait()
        got.append(accounts.workspace_of(ada, store))
    threads = [threading.Thread(target=sign_in) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 4 and len(set(got)) == 1
    assert store.account_workspace(ada.id) == got[0]


def test_a_store_made_before_accounts_opens_unchanged(tmp_path):
    db = old_run_store(tmp_path / "home")
    s = RunStore(f"sqlite:///{db}", home=tmp_path / "home")
    try:
        tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "account_workspaces" in tables
        assert s.get("00000000000000aa").label == "old"
        assert s.workspace_account("ws") is None and accounts.link_opens("ws", None, s)
        ws = accounts.workspace_of(accounts.from_claims(claims()), s)
        assert s.workspace_account(ws) is not None
    finally:
        s.close()


def test_the_tests_oidc_provider_checks_what_a_real_one_does():
    """tests/oidc_provider.py, which the browser test signs in against: a code is for one
    use by the registered client with the PKCE verifier, and the id token is signed (JWKS),
    carries the nonce and names the user; userinfo needs the access token."""
    import base64
    import hashlib
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    from joserfc import jwt
    from joserfc.jwk import KeySet

    from .oidc_provider import OidcProvider

    redirect = "http://127.0.0.1:9/oauth2callback"

    def get(url, data=None, headers=None):
        req = urllib.request.Request(url, data=urllib.parse.urlencode(data).encode() if data else None,
                                     headers=headers or {})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    with OidcProvider("cid", "csecret", redirect) as op:
        op.user = {"sub": "u-1", "email": "ada@school.example", "email_verified": True}
        meta = get(op.metadata_url)[1]
        assert meta["issuer"] == op.issuer and "S256" in meta["code_challenge_methods_supported"]
        verifier = "v" * 50
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

        def authorize(**over):
            q = {"client_id": "cid", "redirect_uri": redirect, "response_type": "code", "scope": "openid email",
                 "state": "st", "nonce": "n-1", "code_challenge": challenge, "code_challenge_method": "S256",
                 **over}
            opener = urllib.request.build_opener(NoRedirect)
            try:
                opener.open(meta["authorization_endpoint"] + "?" + urllib.parse.urlencode(q))
            except urllib.error.HTTPError as e:
                if e.code != 302:
                    return None
                back = urllib.parse.parse_qs(urllib.parse.urlparse(e.headers["Location"]).query)
                assert back["state"] == ["st"]
                return back["code"][0]
            return None

        assert authorize(redirect_uri="http://evil/cb") is None and authorize(client_id="x") is None
        token = {"grant_type": "authorization_code", "redirect_uri": redirect, "client_id": "cid",
                 "client_secret": "csecret", "code_verifier": verifier}
        code = authorize()
        assert get(meta["token_endpoint"], {**token, "code": code, "client_secret": "no"})[0] == 401
        code = authorize()
        assert get(meta["token_endpoint"], {**token, "code": code, "code_verifier": "w" * 50})[0] == 400
        code = authorize()
        status, tok = get(meta["token_endpoint"], {**token, "code": code})
        assert status == 200
        assert get(meta["token_endpoint"], {**token, "code": code})[0] == 400          # one use only
        keys_ = KeySet.import_key_set(get(meta["jwks_uri"])[1])
        claims = jwt.decode(tok["id_token"], keys_).claims
        assert (claims["iss"], claims["aud"], claims["sub"], claims["nonce"]) == (op.issuer, "cid", "u-1", "n-1")
        assert get(meta["userinfo_endpoint"], headers={"Authorization": "Bearer " + tok["access_token"]}) \
            == (200, op.user)
        assert get(meta["userinfo_endpoint"], headers={"Authorization": "Bearer nope"})[0] == 401
