"""X-ray Lab — Class board: the runs students chose to share (switch on the Train
page's results), per preset a leaderboard by test accuracy and the spread of results.
Shared runs show settings and results only: never a workspace key or a run id, which
would open the student's runs. With XRAY_LAB_TEACHER_PASSWORD set (or signed in as an account
listed in XRAY_LAB_TEACHERS, xray_ui/accounts.py), the teacher sees
every workspace's runs (workspaces as short, one-way names) and can remove runs, opens and
closes the class experiment and sends a setup or a pinned message to the class
(xray_ui/lecture.py). `?view=present` is the projector's view."""
from __future__ import annotations

import xray_ui

xray_ui.install()   # first: Streamlit's patches, version-checked, and the server's shutdown (xray_ui/__init__.py)

import hashlib
import hmac
import logging
import math
import os
import secrets

import pandas as pd
import plotly.express as px
import streamlit as st

from xray_core.presets import PRESETS
from xray_core.runs import service
from xray_core import settings
from xray_ui import lecture
from xray_ui.accounts import account
from xray_ui.nav import page_links
from xray_ui.session import store, workspace_notice
from xray_ui.throttle import LOGIN, client_key

from xray_ui.icon import ICON  # noqa: E402  (the favicon ships with the app: no request leaves the server)
st.set_page_config(page_title="X-ray Lab · Class board", page_icon=ICON, layout="wide")
OWN = "(own settings)"
_log = logging.getLogger("xray_lab.teacher_login")


def main() -> None:
    page_links()
    if lecture.presenting():   # ?view=present: the projector's view of the class, no sidebar
        lecture.present_view()
        return
    st.title("X-ray Lab · Class board")
    st.caption("Runs your classmates chose to share (a switch under each run's results on the Train page): "
               "their settings and results, never their workspace links.")
    workspace_notice()
    teacher = teacher_login()
    s = store()
    recs = s.list_runs(None, shared_only=not teacher, states=None if teacher else ["finished", "stopped"])
    if teacher:
        lecture.teacher_panel()   # class experiment, Send to class (issue 25)
        teacher_panel(recs)
        return
    lecture.class_status_for_students()
    recs = [r for r in recs if r.test]
    if not recs:
        st.info("Nobody has shared a run yet. Train one on the Train page and switch on "
                "“Share with the class” under its results.")
        return
    board(recs)


def _row(r, *, teacher: bool = False) -> dict:
    c, res = r.config, r.result or {}
    t = r.test or {}
    row = {"who": r.nickname or "anonymous", "preset": r.preset or OWN, "label": r.label,
           "test acc %": None if t.get("accuracy") is None else round(100 * t["accuracy"], 1),
           "test loss": None if t.get("loss") is None else round(t["loss"], 3),
           "train acc %": None if res.get("train_accuracy") is None else round(100 * res["train_accuracy"], 1),
           "arch": c.get("arch"), "activation": c.get("activation"), "epochs": f"{r.epochs_done}/{r.epochs}",
           "batch": c.get("batch_size"), "lr": c.get("lr"), "bn": c.get("batch_norm"),
           "mode": c.get("cnn_mode") if c.get("arch") == "cnn" else "", "data": _data_name(c.get("data")),
           "seed": c.get("seed")}
    if teacher:
        # a one-way short name groups a student's runs without putting their key on a projected screen
        row = {"workspace": hashlib.sha256(r.workspace.encode()).hexdigest()[:8], "state": r.state,
               "shared": r.shared, **row}
    return row


def _data_name(data) -> str:
    d = str(data or "")
    return d if d == "phantom" else ("uploaded zip" if d.endswith(".zip") else "folder")


def board(recs) -> None:
    df = pd.DataFrame([_row(r) for r in recs])
    order = [p for p in PRESETS if p in set(df["preset"])] + ([OWN] if OWN in set(df["preset"]) else [])
    st.plotly_chart(spread_figure(df, order), width="stretch", key="board_spread")
    for preset in order:
        part = df[df["preset"] == preset].sort_values("test acc %", ascending=False)
        title = PRESETS[preset].title if preset in PRESETS else "Runs with their own settings"
        st.subheader(f"{preset} · {title}" if preset in PRESETS else title)
        reported = PRESETS[preset].reported if preset in PRESETS else {}
        if "test_accuracy" in reported:
            st.caption(f"Course figure: {reported['test_accuracy']} % test accuracy. "
                       f"{len(part)} shared run(s); best {part['test acc %'].max():.1f} %, "
                       f"median {part['test acc %'].median():.1f} %.")
        part = part.reset_index(drop=True)
        part.insert(0, "rank", range(1, len(part) + 1))
        st.dataframe(part.drop(columns=["preset"]), hide_index=True, width="stretch", key=f"board_{preset}")


def spread_figure(df: pd.DataFrame, order: list[str]):
    """Every shared run as a dot over a box per preset: the spread of the class's results."""
    fig = px.box(df, x="preset", y="test acc %", points="all", category_orders={"preset": order},
                 hover_data=["who", "label", "epochs", "batch", "lr"])
    fig.update_layout(title="Test accuracy of shared runs, per experiment", height=360,
                      margin=dict(l=10, r=10, t=50, b=10), yaxis=dict(range=[0, 100]))
    return fig


# ---- the teacher -------------------------------------------------------------------------

def teacher_login() -> bool:
    acct = account()
    if acct is not None and acct.teacher:   # signed in as an account listed in XRAY_LAB_TEACHERS
        return True
    password = settings.get("XRAY_LAB_TEACHER_PASSWORD") or ""
    if not password:
        return False
    if st.session_state.get("_teacher"):
        if st.sidebar.button("Leave teacher view", key="teacher_logout"):
            st.session_state["_teacher"] = False
            st.rerun()
        return True
    with st.sidebar.expander("Teacher"):
        st.text_input("Teacher password", type="password", key="teacher_password", on_change=_check_password,
                      args=(password,))
        if (wait := st.session_state.pop("_teacher_wrong", None)) is not None:
            st.error(f"Wrong password. The next attempt is checked in {math.ceil(wait)} s.")
        if (wait := st.session_state.pop("_teacher_wait", None)) is not None:
            st.error(f"Too many wrong passwords: wait {math.ceil(wait)} s, then try again "
                     "(a password entered before that is not checked).")
    return False


def _login_keys() -> tuple[list[str], str]:
    """The throttle's keys for this attempt (this browser session, this client) and the
    client's name for the log (xray_ui/throttle.py: behind a proxy, X-Forwarded-For)."""
    sid = st.session_state.setdefault("_login_session", secrets.token_hex(8))
    try:
        ip = st.context.ip_address
        fwd = st.context.headers.get("X-Forwarded-For") if st.context.headers else None
    except (AttributeError, RuntimeError):   # no browser (AppTest)
        ip, fwd = None, None
    client = client_key(ip, fwd)
    return ["session:" + sid, client], client


def _check_password(password: str) -> None:
    entered = st.session_state.get("teacher_password") or ""
    st.session_state["teacher_password"] = ""  # never kept in the session
    if not entered:
        return
    keys, client = _login_keys()
    wait = LOGIN.wait(keys)
    if wait > 0:     # refused unchecked: guessing is no faster than the growing delay
        st.session_state["_teacher_wait"] = wait
        _log.warning("teacher login: attempt from %r refused unchecked (%.0f s left of its delay)", client, wait)
        return
    ok = hmac.compare_digest(entered.encode(), password.encode())
    st.session_state["_teacher"] = ok
    if ok:
        LOGIN.succeeded(keys)
        _log.info("teacher login from %r", client)
        return
    wait = LOGIN.failed(keys)
    st.session_state["_teacher_wrong"] = wait
    _log.warning("teacher login: wrong password from %r (%d in a row from this client); next attempt "
                 "checked in %.0f s", client, LOGIN.failures(client), wait)


def teacher_panel(recs) -> None:
    st.info(f"Teacher view: every workspace's runs ({len(recs)}), shared or not. Workspaces are shown as "
            "short one-way names, not their keys.")
    shared = [r for r in recs if r.shared and r.test]
    if shared:
        with st.expander("What the class sees", expanded=False):
            board(shared)
    if not recs:
        return
    df = pd.DataFrame([_row(r, teacher=True) for r in recs])
    st.dataframe(df, hide_index=True, width="stretch", key="teacher_runs")
    names = {r.id: f"{i + 1}. {_row(r, teacher=True)['workspace']} · {r.label} · {r.state}"
             for i, r in enumerate(recs)}
    live = [r.id for r in recs if r.state in ("queued", "training")]
    if live:   # a teacher can stop anyone's runs: a student who filled the queue, a run gone astray
        queued = [r.id for r in recs if r.state == "queued"]
        c1, c2 = st.columns(2)
        c1.button(f"■ Stop all {len(queued)} queued run(s)", key="teacher_stop_queued", disabled=not queued,
                  on_click=_stop, args=(queued,))
        c2.caption(f"{len(live)} run(s) queued or training. Pick runs below to stop just those.")
    picked = st.multiselect("Runs to stop or remove (removing takes their curves, results and models)",
                            list(names), key="teacher_pick", format_func=names.get)
    if not picked:
        if (n := st.session_state.pop("_teacher_stopped", None)) is not None:
            st.success(f"Asked {n} run(s) to stop: each keeps what it learned and is recorded as stopped.")
        return
    live_picked = [rid for rid in picked if rid in live]
    if live_picked:
        st.button(f"■ Stop {len(live_picked)} live run(s)", key="teacher_stop", on_click=_stop, args=(live_picked,))
    if st.button(f"Remove {len(picked)} run(s)", key="teacher_remove"):
        st.session_state["_teacher_confirm"] = list(picked)
    if st.session_state.get("_teacher_confirm") == list(picked):
        st.warning(f"Remove {len(picked)} run(s) for good?")
        st.button("Yes, remove", key="teacher_remove_confirm", type="primary", on_click=_remove, args=(picked,))


def _stop(run_ids: list[str]) -> None:
    # the flag in the store too: a run training on another server of this database stops there
    st.session_state["_teacher_stopped"] = service.stop_runs(run_ids, store=store(), by="teacher")
    st.session_state["teacher_pick"] = []
    _log.info("teacher stopped %d run(s)", len(run_ids))


def _remove(run_ids: list[str]) -> None:
    s = store()
    for rid in run_ids:
        s.delete(rid)
    st.session_state.pop("_teacher_confirm", None)
    st.session_state["teacher_pick"] = []


main()
