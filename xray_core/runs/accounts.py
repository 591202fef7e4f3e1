"""Accounts where a school has them (issue 25, item 4): a signed-in account's workspace.

The pages sign in with the school's OpenID Connect provider through Streamlit's `st.login`
(xray_ui/accounts.py); this module turns the id token's claims into an `Account` and keeps
the account's workspace in the run store (`account_workspaces`), so it needs no streamlit.

- An account is a one-way name of the provider's issuer and subject (`iss`, `sub`): the
  subject is the provider's stable id of a person, an e-mail address can be renamed or reused.
- Its workspace is an ordinary signed key (runs/keys.py), issued on the first sign-in and
  bound to the account: the pages find it by the account, never by the link, and a link
  naming a bound workspace opens nothing for anyone else (`link_opens`).
- Teachers are the accounts whose `email` claim is in XRAY_LAB_TEACHERS (comma-separated,
  case ignored). An address the provider marks unverified (`email_verified: false`) is never
  a teacher's; a provider that does not send `email_verified` (Microsoft Entra) is trusted for
  the addresses it issues.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping

from xray_core import settings
from xray_core.runs.store import RunStore


@dataclass(frozen=True)
class Account:
    id: str                 # sha256 of issuer and subject, 32 hex characters
    email: str | None
    name: str | None
    teacher: bool

    @property
    def shown(self) -> str:
        """How the page names the account: its address, else its name."""
        return self.email or self.name or "your account"


def account_id(issuer: str, subject: str) -> str:
    return hashlib.sha256(f"xray-lab account\0{issuer}\0{subject}".encode()).hexdigest()[:32]


def teacher_emails() -> frozenset[str]:
    """XRAY_LAB_TEACHERS as lower-case addresses (blanks and spaces dropped)."""
    text = settings.get("XRAY_LAB_TEACHERS") or ""
    return frozenset(e.strip().lower() for e in text.split(",") if e.strip())


def _claim(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def from_claims(claims: Mapping[str, Any] | None) -> Account | None:
    """The account of a signed-in user's id-token claims; None without a subject (a
    provider that names nobody cannot own a workspace)."""
    if not claims:
        return None
    sub = _claim(claims, "sub")
    if sub is None:
        return None
    email = _claim(claims, "email")
    verified = claims.get("email_verified", True) not in (False, "false", "False")
    teacher = bool(email and verified and email.lower() in teacher_emails())
    return Account(account_id(_claim(claims, "iss") or "", sub), email, _claim(claims, "name"), teacher)


def workspace_of(account: Account, store: RunStore) -> str:
    """The account's workspace: the one bound to it, or a new signed key bound now."""
    if ws := store.account_workspace(account.id):
        return ws
    return store.bind_account(account.id, store.issue_workspace(), account.email)


def link_opens(key: str, account: Account | None, store: RunStore) -> bool:
    """Whether a link's workspace key may open for this viewer (None: not signed in), as
    far as accounts go: a key bound to an account opens only for that account. (Whether the
    key is one this server issued is `RunStore.workspace_issued`.)"""
    owner = store.workspace_account(key)
    return owner is None or (account is not None and owner == account.id)
