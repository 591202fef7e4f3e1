"""The live lecture on the pages (issue 25): the teacher's pinned message on every page, the
Train page's "Try this" banner and "Join the class experiment", the teacher's class controls
on the Class board, and the projector view (`?view=present`).

What every page polls (the pin, the open experiment, the race) is read from the run store
at most once a second per server process and shared by all sessions (`_cached`): thirty
students and a projector cost one small query a second, and every replica shows the same,
since it is all in the store (runs/classes.py)."""
from __future__ import annotations

import threading
import time

import pandas as pd
import streamlit as st

from xray_core.config import KNOBS, RunConfig
from xray_core.errors import XrayLabError, one_line
from xray_core.presets import PRESETS
from xray_core.runs import classes
from xray_ui.charts_lecture import race
from xray_ui.controls import config_from_state, fill
from xray_ui.session import store
from xray_ui.texts import plain

CACHE_S = 1.0             # what pages poll is at most this old
PRESENT_REFRESH_S = 1.0   # the projector's fragment: at most once a second (issue 25, item 3)
STATUS_REFRESH_S = 2.0    # the teacher's live status on the board
WATCH_S = 3.0             # an idle Train page notices a new send or class experiment this late

_CACHE: dict = {}
_FIGS: dict = {}          # the race's figure per (experiment, curves' lengths), oldest first
_CACHE_LOCK = threading.Lock()


def _cached(key, fn):
    """fn() shared by every session of this process for CACHE_S seconds (keyed by the store)."""
    k = (store().url, key)
    now = time.monotonic()
    with _CACHE_LOCK:
        hit = _CACHE.get(k)
        if hit is not None and now - hit[0] < CACHE_S:
            return hit[1]
    value = fn()
    with _CACHE_LOCK:
        _CACHE[k] = (now, value)
        if len(_CACHE) > 64:      # experiments come and go: keep the newest only
            for old in sorted(_CACHE, key=lambda x: _CACHE[x][0])[:32]:
                del _CACHE[old]
    return value


def forget() -> None:
    """Drop the shared cache (the teacher's own changes show at once; tests)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _FIGS.clear()


def pin() -> dict | None:
    return _cached("pin", lambda: classes.pinned(store=store()))


def open_experiment() -> dict | None:
    return _cached("current", lambda: classes.current(store=store()))


# ---- every page ---------------------------------------------------------------------------

def pinned_message() -> None:
    """The teacher's pinned one-line message, on every page (xray_ui/nav.page_links)."""
    try:
        p = pin()
    except XrayLabError:      # no store: no message; the page says what is wrong elsewhere
        return
    if p and p.get("message"):
        st.info(plain(p["message"]), icon=":material/push_pin:")


# ---- the Train page -----------------------------------------------------------------------

def train_panels(cfg: RunConfig | None) -> None:
    """Above the Train page's panels: the teacher's "Try this" and the class experiment."""
    try:
        try_this_banner()
        join_panel(cfg)
        _watch(_what_shows())
    except XrayLabError as e:   # a store hiccup costs the banners, never the page
        st.error(plain(f"The class's banners are unavailable: {one_line(e)}"))


def _what_shows() -> tuple:
    p, exp = pin(), open_experiment()
    return (p["id"] if p else None, exp["id"] if exp else None)


@st.fragment(run_every=WATCH_S)
def _watch(shown: tuple) -> None:
    """A student who is only watching the page sees a new send or experiment within
    WATCH_S: this reads the shared 1 s cache and reruns the page only when they changed
    (the banners' buttons fill the sidebar, so they are drawn by the whole page)."""
    try:
        if _what_shows() != shown:
            st.rerun()
    except XrayLabError:
        pass                    # the next full run says what is wrong


def try_this_banner() -> None:
    """The teacher's setup, offered until the student accepts or dismisses it: the sidebar
    changes only on a click, never under the student's hands."""
    p = pin()
    if not p or not p.get("setup") or st.session_state.get("_pin_seen") == p["id"]:
        return
    with st.container(border=True):
        c1, c2, c3 = st.columns([5, 1, 1], vertical_alignment="center")
        c1.markdown(f"**Try this:** {plain(classes.try_this(p['setup']))}")
        c2.button("Accept", key="pin_accept", type="primary", on_click=_accept_pin, args=(p,), width="stretch",
                  help="Fills the sidebar with the teacher's setup (your data and seed stay).")
        c3.button("Not now", key="pin_dismiss", on_click=_seen_pin, args=(p["id"],), width="stretch")


def _accept_pin(p: dict) -> None:
    cfg = RunConfig.from_dict(p["setup"]["config"])
    fill(cfg.replace(seed=st.session_state.get("seed", cfg.seed)))   # the student's data and seed stay
    _seen_pin(p["id"])
    st.toast(f"Sidebar set to {classes.try_this(p['setup'])}.")


def _seen_pin(pin_id: int) -> None:
    st.session_state["_pin_seen"] = pin_id


def join_panel(cfg: RunConfig | None) -> None:
    """The open class experiment: one click takes the next turn (a setup and a seed of its
    own) and fills the sidebar; the next ▶ Train with that setup is recorded as the turn."""
    if msg := st.session_state.pop("_class_error", None):
        st.error(plain(msg))
    exp = open_experiment()
    if exp is None:
        return
    turn = st.session_state.get("_class_turn")
    with st.container(border=True):
        if turn and turn["experiment_id"] == exp["id"]:
            head = (f"**Class experiment:** {plain(exp['title'])} · your turn: **{plain(turn['label'])}**, "
                    f"seed {turn['seed']}.")
            if cfg is not None and same_setup(cfg, turn):
                st.markdown(head + " Press ▶ Train: this run counts for the class.")
            else:
                c1, c2 = st.columns([4, 2], vertical_alignment="center")
                c1.markdown(head + " The sidebar no longer matches it: a run with other settings does not "
                                   "count for the class.")
                c2.button("Put my setup back", key="class_refill", on_click=_refill, width="stretch")
            return
        c1, c2 = st.columns([4, 2], vertical_alignment="center")
        c1.markdown(f"**Class experiment open:** {plain(exp['title'])} — "
                    f"{len(exp['setups'])} setups; join and you get one of them, with a seed of your own.")
        c2.button("Join the class experiment", key="class_join", type="primary", on_click=_join,
                  args=(exp["id"],), width="stretch")


def _join(experiment_id: str) -> None:
    ws = st.session_state.get("xray_ws")
    try:
        a = classes.assign(experiment_id, ws, store=store())
    except XrayLabError as e:
        st.session_state["_class_error"] = str(e)
        forget()
        return
    fill(a.config, data=True)
    try:   # what the sidebar makes of it: the config a Train will start (knobs that do not apply at defaults)
        made = config_from_state(a.config.data).to_dict()
    except XrayLabError:
        made = a.config.to_dict()
    st.session_state["_class_turn"] = {"experiment_id": experiment_id, "number": a.number, "setup": a.setup,
                                       "seed": a.seed, "label": a.label, "config": made}


def _refill() -> None:
    turn = st.session_state.get("_class_turn")
    if turn:
        fill(RunConfig.from_dict(turn["config"]), data=True)


def same_setup(cfg: RunConfig, turn: dict) -> bool:
    try:
        return cfg.resolved().to_dict() == RunConfig.from_dict(turn["config"]).resolved().to_dict()
    except XrayLabError:
        return False


def turn_for(cfg: RunConfig) -> str | None:
    """The class experiment a Train with `cfg` is a turn of (its group), else None."""
    turn = st.session_state.get("_class_turn")
    return turn["experiment_id"] if turn and same_setup(cfg, turn) else None


def took_turn(group_id: str | None) -> None:
    """A run of the turn started: the turn is used (joining again takes another)."""
    if group_id is not None:
        st.session_state.pop("_class_turn", None)


# ---- the class experiment's status (board and projector) -----------------------------------

def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def status_rows(status: dict) -> list[dict]:
    rows = []
    for s in status["setups"]:
        ci = s["ci95"]
        arrived = " · ".join(f"{n} {state}" for state, n in sorted(s["states"].items())) or "none yet"
        rows.append({"setup": s["label"] or s["preset"], "joined": s["assigned"], "runs arrived": arrived,
                     "finished": s["n"],
                     "mean test acc ± 95 % CI": _pct(s["mean"]) + ("" if not ci else f" ± {50 * (ci[1] - ci[0]):.1f}")})
    return rows


def verdict_line(status: dict) -> str:
    c = status["compare"]
    words = f"**{plain(c['b_label'])}** vs **{plain(c['a_label'])}**: **{c['verdict']}**"
    if c.get("p_value") is not None:
        words += f" (p = {c['p_value']:.3g})"
    more = c.get("more_runs_needed")
    if more and any(more):
        words += f" — more runs needed: {more[0]} and {more[1]}"
    elif c.get("verdict") == "different":
        words += " — the class has enough runs to tell"
    return words


def status_panel(status: dict, *, key: str) -> None:
    st.dataframe(pd.DataFrame(status_rows(status)), hide_index=True, width="stretch", key=key)
    st.markdown(verdict_line(status))
    if status["compare"].get("verdict_text"):
        st.caption(plain(status["compare"]["verdict_text"]))


def class_status_for_students() -> None:
    """The open class experiment on the students' board, read-only."""
    exp = open_experiment()
    if exp is None:
        return
    st.subheader(f"Class experiment: {exp['title']}")
    status_panel(_cached(("status", exp["id"]), lambda: classes.status(exp["id"], store=store())),
                 key="class_status_students")


# ---- the teacher --------------------------------------------------------------------------

OWN = "(the preset's)"
SEND_KNOBS = ("activation", "alpha", "epochs", "batch_size", "lr")   # what a lecture changes most


def teacher_panel() -> None:
    """Class experiment and Send to class, on the Class board (teacher signed in)."""
    st.subheader("The lecture")
    exp_tab, send_tab = st.tabs(["Class experiment", "Send to class"])
    with exp_tab:
        experiment_controls()
    with send_tab:
        send_controls()


def experiment_controls() -> None:
    if msg := st.session_state.pop("_class_msg", None):
        st.success(msg)
    if msg := st.session_state.pop("_class_fail", None):
        st.error(plain(msg))
    exp = classes.current(store=store())
    if exp is not None:
        _live_status(exp["id"])
        st.button("Close the class experiment", key="class_close", on_click=_close, args=(exp["id"],),
                  help="No more turns; its runs and its result stay (and in each student's report).")
        st.caption("Projector: add `?view=present` to this page's address.")
    with st.expander("Open a new class experiment", expanded=exp is None):
        st.multiselect("Setups to compare (2 or more presets)", list(PRESETS), key="class_setups",
                       default=None, max_selections=classes.MAX_SETUPS,
                       format_func=lambda n: f"{n} · {PRESETS[n].title.split(': ', 1)[-1]}")
        st.text_input("The question (optional)", key="class_title", max_chars=200,
                      placeholder="e.g. Does LeakyReLU beat ReLU?")
        st.number_input("Epochs for every setup (0: each preset's own)", 0, KNOBS["epochs"].max, 0,
                        key="class_epochs")
        st.button("Open the class experiment", key="class_open", type="primary", on_click=_open)


def _live_status(experiment_id: str) -> None:
    @st.fragment(run_every=STATUS_REFRESH_S)
    def live() -> None:
        try:
            status = classes.status(experiment_id, store=store())
        except XrayLabError as e:
            st.error(plain(e))
            return
        st.markdown(f"**{plain(status['title'])}** · {status['assigned']} turn(s) handed out")
        status_panel(status, key="class_status")
    live()


def _open() -> None:
    setups = list(st.session_state.get("class_setups") or [])
    epochs = int(st.session_state.get("class_epochs") or 0)
    try:
        cid = classes.open(setups, st.session_state.get("class_title") or "",
                           overrides={"epochs": epochs} if epochs else None, store=store())
    except (XrayLabError, KeyError, ValueError) as e:
        st.session_state["_class_fail"] = one_line(e)
        return
    forget()
    st.session_state["class_setups"] = []
    st.session_state["_class_msg"] = (f"Class experiment open ({classes.get(cid, store=store())['title']}): "
                                      "students see “Join the class experiment” on the Train page.")


def _close(experiment_id: str) -> None:
    try:
        classes.close(experiment_id, store=store())
    except XrayLabError as e:
        st.session_state["_class_fail"] = str(e)
    forget()


def send_controls() -> None:
    if msg := st.session_state.pop("_send_msg", None):
        st.success(msg)
    if msg := st.session_state.pop("_send_fail", None):
        st.error(plain(msg))
    now = classes.pinned(store=store())
    if now:
        shown = []
        if now.get("setup"):
            shown.append(f"Try this: {classes.try_this(now['setup'])}")
        if now.get("message"):
            shown.append(f"pinned: “{now['message']}”")
        st.caption(plain("Students see now — " + " · ".join(shown)))
    st.selectbox("Preset", ["(none: a message only)", *PRESETS], key="send_preset")
    cols = st.columns(len(SEND_KNOBS))
    act = KNOBS["activation"]
    cols[0].selectbox("Activation", [OWN, *act.choices], key="send_activation",
                      format_func=lambda c: act.choice_labels.get(c, c))
    cols[1].number_input("LeakyReLU α (0: preset's)", 0.0, 1.0, 0.0, step=0.01, format="%.3g", key="send_alpha")
    cols[2].number_input("Epochs (0: preset's)", 0, KNOBS["epochs"].max, 0, key="send_epochs")
    cols[3].number_input("Batch size (0: preset's)", 0, 4096, 0, key="send_batch_size")
    cols[4].number_input("Learning rate (0: preset's)", 0.0, 1.0, 0.0, step=1e-4, format="%g", key="send_lr")
    st.text_input("Pinned message for every page (one line, optional)", key="send_message",
                  max_chars=classes.MESSAGE_CHARS, placeholder="e.g. Watch the validation loss after epoch 10")
    c1, c2 = st.columns(2)
    c1.button("Send to class", key="send_class", type="primary", on_click=_send)
    c2.button("Clear what students see", key="send_clear", on_click=_clear, disabled=not now)


def _send() -> None:
    s = st.session_state
    preset = s.get("send_preset")
    preset = preset if preset in PRESETS else None
    knobs = {}
    if s.get("send_activation") not in (None, OWN):
        knobs["activation"] = s["send_activation"]
    for name in ("alpha", "epochs", "batch_size", "lr"):
        v = s.get(f"send_{name}")
        if v:
            knobs[name] = KNOBS[name].kind(v)
    if knobs and preset is None:
        s["_send_fail"] = "Pick the preset those knobs change."
        return
    try:
        got = classes.send(preset, knobs, s.get("send_message") or "", store=store())
    except (XrayLabError, KeyError, ValueError) as e:
        s["_send_fail"] = one_line(e)
        return
    forget()
    if got is None:
        s["_send_fail"] = "Nothing to send: pick a preset or write a message."
        return
    s["_send_msg"] = "Sent: every Train page offers it" if got.get("setup") else "Sent: the message is pinned"


def _clear() -> None:
    classes.send(store=store())
    forget()
    st.session_state["_send_msg"] = "Cleared: students see no banner and no pinned message."


# ---- the projector ------------------------------------------------------------------------

PRESENT_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], [data-testid="stSidebarNav"],
header[data-testid="stHeader"] {display: none !important;}
.block-container, [data-testid="stMainBlockContainer"] {padding: 0.5rem 1.5rem 1rem !important;
  max-width: 100% !important;}
html, body, [data-testid="stAppViewContainer"] {font-size: 24px;}
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li {font-size: 1.1rem; line-height: 1.3;}
[data-testid="stCaptionContainer"] p {font-size: 1rem !important;}
[data-testid="stMetricValue"] {font-size: 2.4rem !important;}
[data-testid="stMetricLabel"] p {font-size: 1.1rem !important;}
h1 {font-size: 2.2rem !important; padding: 0 0 0.3rem 0 !important;}
</style>"""


def presenting() -> bool:
    return st.query_params.get("view") == "present"


def present_view() -> None:
    """?view=present: no sidebar, large type, the class's race and each setup's result,
    redrawn by a fragment at most once a second from the shared cache (one query a second
    for every projector of this server: no more than one student)."""
    st.markdown(PRESENT_CSS, unsafe_allow_html=True)

    @st.fragment(run_every=PRESENT_REFRESH_S)
    def board() -> None:
        try:
            show_race()
        except XrayLabError as e:
            st.error(plain(e))
    board()


def _race_data() -> tuple[dict | None, dict | None]:
    exp = open_experiment()
    if exp is None:    # none open: the last one, closed (its result stays on the screen)
        rows = _cached("latest", lambda: store().list_class_experiments(limit=1))
        exp = rows[0] if rows else None
    if exp is None:
        return None, None
    cid = exp["id"]
    return (_cached(("race", cid), lambda: classes.curves(cid, store=store())),
            _cached(("status", cid), lambda: classes.status(cid, store=store())))


def show_race() -> None:
    curves, status = _race_data()
    if curves is None:
        st.title("X-ray Lab · the class")
        st.markdown("No class experiment yet: the teacher opens one on the Class board.")
        return
    st.title(f"{curves['title']}" + (" (closed)" if curves["state"] == "closed" else ""))
    key = (curves["id"], _signature(curves))
    with _CACHE_LOCK:     # a figure is made once per new epoch of the class, whoever watches
        fig = _FIGS.get(key)
    if fig is None:
        fig = race(curves)
        with _CACHE_LOCK:
            _FIGS[key] = fig
            while len(_FIGS) > 8:
                _FIGS.pop(next(iter(_FIGS)))
    left, right = st.columns([3, 1], gap="medium")   # the race and the results side by side: one 720p screen
    # theme=None: the chart's own large fonts, not the app theme's small ones
    left.plotly_chart(fig, width="stretch", key="present_race", theme=None, config={"displayModeBar": False})
    with right:
        for s in status["setups"]:
            ci = s["ci95"]
            live = s["states"].get("training", 0) + s["states"].get("queued", 0)
            st.metric(s["label"] or s["preset"], _pct(s["mean"]), help="mean test accuracy of the finished runs")
            st.caption(f"{s['n']} finished" + ("" if not ci else f" · ± {50 * (ci[1] - ci[0]):.1f}")
                       + (f" · {live} training" if live else ""))
        st.markdown(verdict_line(status))


def _signature(curves: dict) -> tuple:
    return tuple((len(s["runs"]), sum(len(r["val_accuracy"]) for r in s["runs"])) for s in curves["setups"])
