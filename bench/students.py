"""A class of N simulated students on a real `streamlit run app.py`, speaking Streamlit's own
websocket protocol (the protobuf BackMsg/ForwardMsg of `streamlit.proto`) as a browser does.

Each student:
- opens the Train page (BackMsg rerun_script with the page's query string) and waits for
  its ScriptFinished;
- presses ▶ Train (a rerun whose WidgetState triggers the button found in the page's
  deltas by its label) if --train;
- follows the server's AutoRerun messages like the browser's timers: a fragment rerun
  (fragment_id, is_auto_rerun) every `interval` until StopAutoRerun;
- re-runs the whole page about every --poke seconds (what a widget change costs) and times
  it from the BackMsg to its ScriptFinished: the "page round trip". The pause after each
  answer is drawn from 0.5-1.5 x --poke (mean --poke): people do not think in lockstep, and a
  fixed pause locked 100 idle students into waves (the server idle ~2 s, then ~100 page runs
  at once sharing the GIL, all answered as the wave ended: ~2 s each at 40 % of a core);
- notices its results ("Test accuracy" metric) and records when they appeared.
The query string the server sets (page_info_changed: the config and the workspace link)
is sent back on later reruns, as the browser's address bar would.

No browser shares the CPU: the only other load is this process (a few % of a core).
Reported: round trip median / p90 / max (all and while training), runs finished and
their click-to-results times, server and trainer CPU (from /proc), messages and bytes
received per student per second.

    python -m bench.students --students 10 [--train] [--epochs 3] [--duration 120]
    python -m bench.students --students 100 --duration 60          # idle class
    python -m bench.students --url http://127.0.0.1:8501 ...         # an already running server
Loopback only; every wait is bounded by --duration (+ a grace period for the results).
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from bench._common import REPO, emit, log, machine, median, pct

TRAIN_LABEL = "▶ Train"
JOIN_LABEL = "Join the class experiment"   # xray_ui/lecture.py, shown while a class experiment is open
LOST_AFTER_S = 20.0       # a page rerun not finished by then is lost (the student moves on)
RESULT_LABEL = "Test accuracy"


def _proto():
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    return BackMsg, ForwardMsg


class Student:
    def __init__(self, idx: int, ws_url: str, query: str, train: bool, poke: float, t_end: float,
                 page_name: str = "", role: str = "student"):
        self.idx, self.ws_url, self.query, self.train = idx, ws_url, query, train
        self.poke, self.t_end = poke, t_end
        self.page_hash = ""
        self.page_name, self.role = page_name, role      # e.g. "Class_board"; student | teacher | projector
        self.train_id: str | None = None
        self.join_id: str | None = None              # "Join the class experiment", when one is open
        self.join = False                            # press it before Train (--class-experiment)
        self.fragments: dict[str, float] = {}        # fragment_id -> interval (auto reruns)
        self._reset: set[str] = set()                # timers to restart (a new interval)
        self.round_trips: list[tuple[float, float, bool]] = []   # (t_sent, seconds, training)
        self.t_click: float | None = None
        self.t_results: float | None = None
        self.msgs = 0
        self.bytes = 0
        self.errors: list[str] = []
        self._finished = asyncio.Event()
        self._waiting_full = False
        self.connected_at: float | None = None
        self.joined = False
        self.after_load: tuple[float, int, int] | None = None

    # -- protocol --
    def _rerun(self, *, trigger: str | None = None, fragment: str | None = None) -> bytes:
        BackMsg, _ = _proto()
        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query
        cs.page_script_hash = self.page_hash
        if self.page_name and not self.page_hash:
            cs.page_name = self.page_name       # the first run names the page; the server answers its hash
        if trigger:
            w = cs.widget_states.widgets.add()
            w.id = trigger
            w.trigger_value = True
        if fragment:
            cs.fragment_id = fragment
            cs.is_auto_rerun = True
        return msg.SerializeToString()

    def _on_message(self, data: bytes) -> None:
        _, ForwardMsg = _proto()
        self.msgs += 1
        self.bytes += len(data)
        fm = ForwardMsg()
        fm.ParseFromString(data)
        kind = fm.WhichOneof("type")
        if kind == "new_session":
            self.page_hash = fm.new_session.page_script_hash or self.page_hash
            # As the browser does (streamlit 1.67 frontend, App.handleNewSession): a whole-page
            # run (no fragment ids in its run identity) clears every fragment timer; the
            # page's fragments register theirs again (AutoRerun) while it runs. Timers left
            # firing during a page run made Streamlit drop that run's end (a bench artefact).
            if not fm.metadata.run.fragment_ids:
                self.fragments.clear()
        elif kind == "page_info_changed":
            self.query = fm.page_info_changed.query_string
        elif kind == "auto_rerun":
            fid, interval = fm.auto_rerun.fragment_id, max(0.1, fm.auto_rerun.interval)
            if self.fragments.get(fid) != interval:   # the same interval keeps its running timer
                self.fragments[fid] = interval
                self._reset.add(fid)
        elif kind == "stop_auto_rerun":
            for fid in fm.stop_auto_rerun.fragment_ids:
                self.fragments.pop(fid, None)
        elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
            el = fm.delta.new_element
            et = el.WhichOneof("type")
            if et == "button" and el.button.label == TRAIN_LABEL:
                self.train_id = el.button.id
            elif et == "button" and el.button.label == JOIN_LABEL:
                self.join_id = el.button.id
            elif et == "metric" and el.metric.label == RESULT_LABEL and self.t_click and not self.t_results:
                self.t_results = time.perf_counter()
        elif kind == "script_finished":
            # a whole-page run ends FINISHED_SUCCESSFULLY; fragment runs end
            # FINISHED_FRAGMENT_RUN_SUCCESSFULLY, and a run cut short by another rerun
            # FINISHED_EARLY_FOR_RERUN (the rerun that replaced it finishes later)
            if self._waiting_full and fm.script_finished in (ForwardMsg.FINISHED_SUCCESSFULLY,
                                                              ForwardMsg.FINISHED_WITH_COMPILE_ERROR):
                self._finished.set()

    async def _full_run(self, ws, trigger: str | None = None) -> float | None:
        """Send a whole-page rerun; seconds until its ScriptFinished (None on timeout)."""
        self._finished.clear()
        self._waiting_full = True
        t = time.perf_counter()
        await ws.send(self._rerun(trigger=trigger))
        try:
            # a student whose page never finished clicks again after a while, as a person
            # would (Streamlit can drop a page run that a fragment's timer raced: counted lost)
            await asyncio.wait_for(self._finished.wait(), timeout=max(1.0, min(LOST_AFTER_S, self.t_end + 60 - t)))
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting_full = False
        return time.perf_counter() - t

    async def run(self) -> None:
        import websockets
        try:
            async with websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                          open_timeout=60, ping_interval=None) as ws:
                self.connected_at = time.perf_counter()
                reader = asyncio.create_task(self._reader(ws))
                timers = asyncio.create_task(self._auto_reruns(ws))
                try:
                    await self._script(ws)
                finally:
                    timers.cancel()
                    reader.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await reader
                        await timers
        except Exception as e:  # a student that cannot connect is a result, not a crash
            self.errors.append(f"{type(e).__name__}: {e}")

    async def _reader(self, ws) -> None:
        async for data in ws:
            if isinstance(data, bytes):
                self._on_message(data)

    async def _auto_reruns(self, ws) -> None:
        """The browser's fragment timers: one rerun per interval per fragment."""
        due: dict[str, float] = {}
        while True:
            now = time.perf_counter()
            for fid in self._reset:
                due.pop(fid, None)
            self._reset.clear()
            for fid, interval in list(self.fragments.items()):
                if fid not in due:
                    due[fid] = now + interval
                elif now >= due[fid]:
                    due[fid] = now + interval
                    await ws.send(self._rerun(fragment=fid))
            for fid in list(due):
                if fid not in self.fragments:
                    del due[fid]
            await asyncio.sleep(0.05)

    async def _script(self, ws) -> None:
        t = time.perf_counter()
        first = await self._full_run(ws)
        if first is None:
            self.errors.append("first page load did not finish")
            return
        self.round_trips.append((t, first, False))
        self.after_load = (time.perf_counter(), self.msgs, self.bytes)   # the steady cost is what follows
        if self.train:
            if self.train_id is None:
                self.errors.append("no Train button on the page")
            else:
                await asyncio.sleep(random.uniform(0, 1.0))   # students do not click in lockstep
                if self.join:
                    if self.join_id is None:
                        self.errors.append("no 'Join the class experiment' button on the page")
                    else:   # one click fills the sidebar with the next turn's setup and seed
                        t = time.perf_counter()
                        rt = await self._full_run(ws, trigger=self.join_id)
                        self.round_trips.append((t, rt if rt is not None else float("inf"), False))
                        self.joined = rt is not None
                        await asyncio.sleep(random.uniform(0.5, 1.5))
                self.t_click = time.perf_counter()
                rt = await self._full_run(ws, trigger=self.train_id)
                if rt is not None:
                    self.round_trips.append((self.t_click, rt, True))
        # every pause ends by t_end (a projector's --poke is "never": it only follows its timers)
        await asyncio.sleep(min(random.uniform(0, self.poke), max(0.0, self.t_end - time.perf_counter())))
        while time.perf_counter() < self.t_end:
            training = bool(self.t_click and not self.t_results)
            t = time.perf_counter()
            rt = await self._full_run(ws)
            self.round_trips.append((t, rt if rt is not None else float("inf"), training))
            await asyncio.sleep(min(self.poke * random.uniform(0.5, 1.5),   # see the module doc
                                    max(0.0, self.t_end - time.perf_counter())))


# ---- the server ---------------------------------------------------------------------

def _cpu_seconds(pid: int) -> float:
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


class CpuMeter:
    """Server-process CPU and its trainers' (child processes) CPU over the run."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.samples: list[tuple[float, float, float]] = []
        self._dead_children = 0.0
        self._last_children: dict[int, float] = {}

    def sample(self) -> None:
        if not self.pid:
            return
        kids = {c: _cpu_seconds(c) for c in _children(self.pid)}
        for c, v in self._last_children.items():
            if c not in kids:
                self._dead_children += v
        self._last_children = kids
        self.samples.append((time.perf_counter(), _cpu_seconds(self.pid), self._dead_children + sum(kids.values())))

    def summary(self) -> dict:
        if len(self.samples) < 2:
            return {}
        (t0, s0, c0), (t1, s1, c1) = self.samples[0], self.samples[-1]
        dt = t1 - t0
        peaks = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(self.samples, self.samples[1:]) if b[0] > a[0]]
        return {"server_cores_mean": (s1 - s0) / dt, "server_cores_p90": pct(peaks, 90),
                "trainers_cores_mean": (c1 - c0) / dt, "seconds": dt}


async def _meter(m: CpuMeter, t_end: float) -> None:
    while time.perf_counter() < t_end:
        m.sample()
        await asyncio.sleep(1.0)
    m.sample()


def _steady(c: "Student") -> dict:
    """Messages and kB per second after the first page load (the load itself is one-off)."""
    if not c.after_load:
        return {}
    t, m, b = c.after_load
    dt = max(1e-9, min(time.perf_counter(), c.t_end) - t)
    return {"msgs_per_s_after_load": round((c.msgs - m) / dt, 2), "kb_per_s_after_load": round((c.bytes - b) / dt / 1024, 2)}


def _timeline(students, t0: float, window: float = 15.0) -> list[dict]:
    rows: dict[int, list[float]] = {}
    for s in students:
        for (sent, rt, _) in s.round_trips[1:]:
            rows.setdefault(int((sent - t0) // window), []).append(rt)
    return [{"from_s": k * window, "n": len(v), "median": median(v), "p90": pct(v, 90),
             "lost": sum(1 for x in v if x == float("inf"))} for k, v in sorted(rows.items())]


async def _class(args, ws_url: str, pid: int | None) -> dict:
    t0 = time.perf_counter()
    t_end = t0 + args.duration
    query = args.query.lstrip("?")
    students = [Student(i, ws_url, query, args.train, args.poke, t_end) for i in range(args.students)]
    for s in students:   # with a class experiment open, every student joins it and trains their turn
        s.join = bool(args.class_experiment)
    # issue 25: the teacher on the Class board (a whole-page rerun every --poke, as the students)
    # and projectors (?view=present: one load, then only the page's own fragment timers)
    others = [Student(args.students + i, ws_url, "view=present", False, 10 * args.duration, t_end,
                      page_name=args.projector_page, role="projector") for i in range(args.projectors)]
    if args.teacher:
        others.append(Student(args.students + args.projectors, ws_url, "", False, args.poke, t_end,
                              page_name="Class_board", role="teacher"))
    meter = CpuMeter(pid)
    tasks = [asyncio.create_task(o.run()) for o in others]
    for s in students:   # students arrive over --arrive seconds, as a class does
        tasks.append(asyncio.create_task(s.run()))
        await asyncio.sleep(args.arrive / max(1, args.students))
    mt = asyncio.create_task(_meter(meter, t_end))
    await asyncio.gather(*tasks)
    # let running jobs finish (bounded) so "runs finished" counts what the class got
    grace_end = time.perf_counter() + args.grace
    await mt
    extra = {o.role: {"first_load_s": o.round_trips[0][1] if o.round_trips else None,
                      "round_trip_s_median": median([rt for (_, rt, _) in o.round_trips[1:]]),
                      # what one projector costs next to one student (the issue: no more)
                      **_steady(o),
                      "msgs": o.msgs, "errors": o.errors[:3]} for o in others}
    rts = [rt for s in students for (_, rt, _) in s.round_trips[1:]]
    rts_training = [rt for s in students for (_, rt, tr) in s.round_trips[1:] if tr]
    done = [s.t_results - s.t_click for s in students if s.t_results and s.t_click]
    first = [s.round_trips[0][1] for s in students if s.round_trips]
    dur = max(1e-9, time.perf_counter() - t0)
    fin = lambda xs: [x for x in xs if x != float("inf")]  # noqa: E731
    return {
        "students": args.students, "train": args.train, "duration_s": args.duration,
        "others": extra,
        "first_load_s": {"median": median(first), "max": max(first) if first else None},
        "round_trip_s": {"n": len(rts), "median": median(rts), "p90": pct(rts, 90), "max": max(rts) if rts else None,
                         "timeouts": len(rts) - len(fin(rts))},
        "round_trip_while_training_s": {"n": len(rts_training), "median": median(rts_training),
                                        "p90": pct(rts_training, 90),
                                        "max": max(rts_training) if rts_training else None},
        # where the slow round trips are: per 15 s of the class (rerun sent in that window)
        "timeline": _timeline(students, t0),
        "joined": sum(1 for s in students if s.joined),
        "runs_finished": len(done), "runs_started": sum(1 for s in students if s.t_click),
        "click_to_results_s": sorted(round(d, 1) for d in done),
        "cpu": meter.summary(),
        "per_student_msgs_per_s": statistics.mean(s.msgs for s in students) / dur,
        "per_student_after_load": {k: statistics.mean(_steady(s).get(k, 0) for s in students)
                                   for k in ("msgs_per_s_after_load", "kb_per_s_after_load")},
        "per_student_kb_per_s": statistics.mean(s.bytes for s in students) / dur / 1024,
        "errors": [f"student {s.idx}: {e}" for s in students for e in s.errors][:10],
        "grace_left_s": round(grace_end - time.perf_counter(), 1),
        # the machine may be shared: how loaded it was when the class ended (1, 5, 15 min)
        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--students", type=int, default=10)
    p.add_argument("--train", action="store_true", help="every student presses Train once")
    p.add_argument("--epochs", type=int, default=3, help="epochs of each student's run (in the link)")
    p.add_argument("--query", default=None, help="the page's query string (default: ?epochs=E)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    p.add_argument("--poke", type=float, default=4.0, help="seconds between whole-page reruns per student")
    p.add_argument("--arrive", type=float, default=5.0, help="seconds over which the students connect")
    p.add_argument("--grace", type=float, default=0.0)
    p.add_argument("--url", help="an already running server (default: start one on a free loopback port)")
    p.add_argument("--max-jobs", type=int, default=None, help="XRAY_LAB_MAX_JOBS for the started server")
    p.add_argument("--projectors", type=int, default=0, help="clients on ?view=present (the projector view)")
    p.add_argument("--projector-page", default="Class_board", help="the page the projectors show")
    p.add_argument("--teacher", action="store_true", help="a teacher re-running the Class board every --poke")
    p.add_argument("--class-experiment", default=None, metavar="PRESETS",
                   help="open a class experiment first (e.g. p1-task1,p1-task2) in the started server's home")
    args = p.parse_args(argv)
    if args.query is None:
        args.query = f"epochs={args.epochs}"
    t_start = time.perf_counter()
    result = {"bench": "students", "machine": machine(), "args": vars(args)}
    class_id = None
    # `timeout` (or Ctrl-C's cousin SIGTERM) must still stop the server this bench started:
    # raised as SystemExit, the ExitStack below closes it (it once outlived a killed bench)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as stack:
        if args.url:
            url, pid = args.url, None
        else:
            from tests.browser import streamlit_server
            home = stack.enter_context(tempfile.TemporaryDirectory(prefix="xray-lab-students-"))
            env = {"XRAY_LAB_HOME": home}
            if args.max_jobs:
                env["XRAY_LAB_MAX_JOBS"] = str(args.max_jobs)
            if args.class_experiment:     # the projector's race and the board's status have something to show
                import subprocess
                opened = subprocess.run([sys.executable, "-m", "xray_core", "class", "open", "--setups",
                                         args.class_experiment, "--epochs", str(args.epochs), "--json", "-"],
                                        cwd=REPO, check=True, env={**os.environ, **env}, capture_output=True, text=True)
                class_id = json.loads(opened.stdout)["id"]
            server = stack.enter_context(streamlit_server(env=env, with_process=True))
            url, pid = server
        host = urlparse(url)
        if host.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("bench.students only talks to a server on loopback")
        ws_url = f"ws://{host.netloc}/_stcore/stream"
        log(f"{args.students} students on {url} for {args.duration:.0f}s (train={args.train})")
        result["result"] = asyncio.run(_class(args, ws_url, pid))
        if class_id:   # what the class experiment holds at the end: the runs that arrived per setup
            import subprocess
            st = subprocess.run([sys.executable, "-m", "xray_core", "class", "status", class_id, "--json", "-"],
                                cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True)
            try:
                d = json.loads(st.stdout)
                result["result"]["class_experiment"] = {
                    "setups": [{k: x.get(k) for k in ("preset", "n", "mean", "ci95")} for x in d["setups"]],
                    "compare": d.get("compare")}
            except (ValueError, KeyError, TypeError):
                result["result"]["class_experiment"] = {"error": (st.stderr or st.stdout).strip()[-300:]}
    emit(result, t_start)


if __name__ == "__main__":
    main()
