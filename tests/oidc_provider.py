"""A small, real OpenID Connect provider for the tests (issue 25, item 4), on loopback only.

The sign-in tests drive Streamlit's own `st.login` against it, so nothing of the sign-in is
mocked: Streamlit (Authlib inside) reads the discovery document, sends the browser to
`/authorize`, trades the code at `/token` (client secret and PKCE checked), and verifies
the RS256 id token against `/jwks` (issuer, audience, expiry, nonce). Signing is Authlib's
JOSE library (joserfc); the server is http.server on 127.0.0.1 in a thread.

`/authorize` approves `provider.user` (the claims of the test user the test chose) at once
and redirects back with a one-time code, like a school's login page after the password.

    with OidcProvider(client_id, client_secret, redirect_uri) as op:
        op.user = {"sub": "s-1", "email": "ada@school.example", "name": "Ada"}
        op.issuer, op.metadata_url
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlparse

from joserfc import jwt
from joserfc.jwk import RSAKey

CODE_SECONDS = 60


class OidcProvider:
    def __init__(self, client_id: str, client_secret: str, redirect_uri: str):
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.user: dict = {}
        self.codes: dict[str, dict] = {}          # code -> the sign-in it stands for
        self.access: dict[str, dict] = {}         # access token -> claims (userinfo)
        self.log: list[str] = []                  # what was asked, for the test to check
        self.errors: list[str] = []               # requests refused, and why
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.issuer = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.metadata_url = self.issuer + "/.well-known/openid-configuration"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="test-oidc", daemon=True)

    def __enter__(self) -> "OidcProvider":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- the documents --
    def metadata(self) -> dict:
        i = self.issuer
        return {"issuer": i, "authorization_endpoint": i + "/authorize", "token_endpoint": i + "/token",
                "jwks_uri": i + "/jwks", "userinfo_endpoint": i + "/userinfo",
                "response_types_supported": ["code"], "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "claims_supported": ["sub", "iss", "email", "email_verified", "name"]}

    def jwks(self) -> dict:
        return {"keys": [self.key.as_dict(private=False)]}

    # -- the flow --
    def authorize(self, q: dict) -> tuple[int, dict]:
        """-> (status, headers): a redirect back with a code, or 400 with the reason."""
        if q.get("client_id") != self.client_id or q.get("redirect_uri") != self.redirect_uri:
            return self._refuse("authorize: unknown client or redirect_uri")
        if q.get("response_type") != "code" or "openid" not in (q.get("scope") or "").split():
            return self._refuse("authorize: not an OpenID code request")
        if not self.user.get("sub"):
            return self._refuse("authorize: no test user chosen")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = {"user": dict(self.user), "nonce": q.get("nonce"), "at": time.time(),
                                "challenge": q.get("code_challenge"), "method": q.get("code_challenge_method")}
        self.log.append(f"authorize {self.user['sub']}")
        back = {"code": code, **({"state": q["state"]} if "state" in q else {})}
        return 302, {"Location": self.redirect_uri + "?" + urlencode(back)}

    def token(self, form: dict, auth_header: str | None) -> tuple[int, dict]:
        cid, secret = form.get("client_id"), form.get("client_secret")
        if auth_header and auth_header.startswith("Basic "):
            from urllib.parse import unquote
            cid, _, secret = base64.b64decode(auth_header[6:]).decode().partition(":")
            cid, secret = unquote(cid), unquote(secret)
        if cid != self.client_id or secret != self.client_secret:
            return 401, self._error("token: bad client credentials", "invalid_client")
        with self._lock:
            grant = self.codes.pop(form.get("code") or "", None)     # one use only
        if grant is None or time.time() - grant["at"] > CODE_SECONDS:
            return 400, self._error("token: unknown or used code", "invalid_grant")
        if form.get("grant_type") != "authorization_code" or form.get("redirect_uri") != self.redirect_uri:
            return 400, self._error("token: bad grant_type or redirect_uri", "invalid_grant")
        if grant["challenge"]:   # PKCE: the verifier must hash to the challenge
            digest = hashlib.sha256((form.get("code_verifier") or "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
                return 400, self._error("token: PKCE verifier does not match", "invalid_grant")
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": self.client_id, "iat": now, "exp": now + 600,
                  "auth_time": now, **grant["user"]}
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        id_token = jwt.encode({"alg": "RS256", "kid": "test-key"}, claims, self.key)
        access = secrets.token_urlsafe(24)
        with self._lock:
            self.access[access] = grant["user"]
        self.log.append(f"token {grant['user']['sub']}")
        return 200, {"access_token": access, "token_type": "Bearer", "expires_in": 600, "id_token": id_token,
                     "scope": "openid profile email"}

    def userinfo(self, auth_header: str | None) -> tuple[int, dict]:
        token = auth_header[7:] if auth_header and auth_header.startswith("Bearer ") else ""
        with self._lock:
            user = self.access.get(token)
        if user is None:
            return 401, self._error("userinfo: bad access token", "invalid_token")
        return 200, dict(user)

    def _refuse(self, why: str) -> tuple[int, dict]:
        self.errors.append(why)
        return 400, {}

    def _error(self, why: str, code: str) -> dict:
        self.errors.append(why)
        return {"error": code, "error_description": why}


def _handler(op: OidcProvider):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):   # quiet: the test reads op.log and op.errors
            pass

        def _json(self, status: int, body: dict, headers: dict | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/.well-known/openid-configuration":
                self._json(200, op.metadata())
            elif url.path == "/jwks":
                self._json(200, op.jwks())
            elif url.path == "/authorize":
                status, headers = op.authorize(q)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif url.path == "/userinfo":
                self._json(*op.userinfo(self.headers.get("Authorization")))
            else:
                self._json(404, {"error": "not_found"})

        def do_POST(self):
            url = urlparse(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            form = {k: v[0] for k, v in parse_qs(body).items()}
            if url.path == "/token":
                self._json(*op.token(form, self.headers.get("Authorization")))
            elif url.path == "/userinfo":
                self._json(*op.userinfo(self.headers.get("Authorization")))
            else:
                self._json(404, {"error": "not_found"})
    return Handler
