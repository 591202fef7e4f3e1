"""Classroom load test: the real server, several real browser sessions training at once.

Starts `streamlit run app.py` with XRAY_LAB_MAX_JOBS=2 (tests/browser.py's
streamlit_server, loopback only) and opens one headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright) with one browser context per student, so
every page is its own Streamlit session. Every request that is not to 127.0.0.1 is
aborted.

  student 0  "/?epochs=200&batch_size=32"  long run: it presses Stop under load
  student k  "/?epochs=3&batch_size=B_k"   B_k distinct, so each job's steps per epoch
                                           (9,600 / B_k on the phantom) identify it
  observer   "/"                           never trains: toggles "Batch normalisation"
                                           to time a widget round trip under load

All students press '▶ Train' back to back. Checked and measured:
- every session either trains or shows its queue position ('position' in the info);
  the queue positions seen, and the "N of 2 training now" cap;
- every job finishes: each page shows 'Test accuracy';
- no session sees another's job: every progress line and results header a page
  ever shows says '#1' (each session's first run), its own epochs and its own steps
  per epoch, and its URL keeps its own batch size;
- responsiveness: round trip of a widget interaction (toggle 'Batch normalisation'
  -> the parameter count changes 353,254 <-> 355,054) on the idle server first, then
  repeatedly during the load, on the observer and on a page that is training;
- Stop under load: student 0 presses '■ Stop' while another job trains; time until
  its page shows '(stopped early)', its chart stops growing, and the others go on
  to 'Done'. (That the engine stops within one batch is measured exactly, in
  process, by bench/latency.py's stop_under_load.)
Every wait is bounded; the whole run is bounded by --deadline seconds.

    python -m bench.classroom [--students 5] [--epochs 3] [--deadline 270]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import re
import time

from bench._common import emit, log, machine, median, pct

BATCHES = [48, 96, 40, 80, 120, 60, 50, 75]    # students 1..: distinct steps on 9,600 patches,
                                               # none is the default 64 (the URL drops defaults)
N_TRAIN = 9600                                  # the phantom's train split
PROGRESS = re.compile(r"(Training|Evaluating on the test set|Done|Stopped) · (#\d+) ([^·\n]+?) · "
                      r"epoch (\d+)/(\d+) · step (\d+)/(\d+)")
QUEUE = re.compile(r"position (\S+) in the queue \((\d+) of (\d+) training now\)")
RESULTS = re.compile(r"Results · (#\d+) ([^\n(]+?)( \(stopped early\))?\n")
PARAMS = re.compile(r"Parameters\s+([\d,]+)")

STATE_JS = """() => {
  const heads = Array.from(document.querySelectorAll('h1, h2, h3')).map(h => h.textContent).join('\\n');
  const body = document.body.innerText + '\\n' + heads;
  let bx = 0;
  for (const p of document.querySelectorAll('.js-plotly-plot')) {
    for (const t of (p.data || [])) { if (t.name === 'batch loss' && t.x.length) bx = t.x[t.x.length - 1]; }
  }
  return {body: body, batch_x: bx, url: location.href};
}"""


class Student:
    def __init__(self, idx, page, epochs, batch_size):
        self.idx, self.page, self.epochs, self.bs = idx, page, epochs, batch_size
        self.steps = -(-N_TRAIN // batch_size)
        self.first_state = None            # 'training' | 'queued' | 'loading' after the click
        self.positions: set = set()
        self.caps: set = set()
        self.t_click = None
        self.t_training = None
        self.t_done = None
        self.progress_seen: set = set()
        self.results_seen: set = set()
        self.foreign: list = []            # anything that is not this session's own job
        self.final = None
        self.seen_training = False
        self.url_ok = True
        self.last_body = ""

    def poll(self, now) -> dict:
        s = self.page.evaluate(STATE_JS)
        body = s["body"]
        for m in PROGRESS.finditer(body):
            self.progress_seen.add(m.group(0))
            run, ep_total, steps = m.group(2), int(m.group(5)), int(m.group(7))
            if run != "#1" or ep_total != self.epochs or steps != self.steps:
                self.foreign.append(m.group(0))
            if self.t_training is None and m.group(1) == "Training" and (int(m.group(6)) > 0
                                                                         or int(m.group(4)) > 1):
                self.t_training = now
            if m.group(1) == "Training":
                self.seen_training = True
        for m in RESULTS.finditer(body + "\n"):
            self.results_seen.add(m.group(0).strip())
            if m.group(1) != "#1":
                self.foreign.append(m.group(0).strip())
        q = QUEUE.search(body)
        if q:
            self.positions.add(q.group(1))
            self.caps.add(int(q.group(3)))
        if self.first_state is None and self.t_click is not None:
            if q:
                self.first_state = "queued"
            elif PROGRESS.search(body):
                self.first_state = "training"
            elif "Loading data and building the model" in body:
                self.first_state = "loading"
        if f"batch_size={self.bs}" not in s["url"]:
            self.url_ok = False
        if "Test accuracy" in body and self.t_done is None:
            self.t_done = now
        m = list(PROGRESS.finditer(body))
        if m and self.t_done is not None:
            self.final = m[-1].group(0)      # the last progress line shown once results are up
        self.last_body = body
        return s


ARM_JS = """(want) => {
  // Start a round-trip timer in the page: performance.now() at the click, and again when
  // the 'Parameters' metric shows `want`; polled every 10 ms by the page itself, so the
  // benchmark's own polling of the other pages does not blur the figure.
  const read = () => {
    for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
      const t = m.innerText; if (t.startsWith('Parameters')) return t.replace('Parameters', '').trim();
    }
    return null;
  };
  const r = {t0: performance.now(), t1: null, want: want, clicked: false};
  window.__rtt = r;
  for (const c of document.querySelectorAll('[data-testid="stCheckbox"]')) {
    if (c.innerText.trim() === 'Batch normalisation') { const i = c.querySelector('input'); (i || c.querySelector('label')).click(); r.clicked = true; break; }
  }
  const h = setInterval(() => {
    if (read() === want) { r.t1 = performance.now(); clearInterval(h); }
    else if (performance.now() - r.t0 > 60000) { clearInterval(h); }
  }, 10);
  return r.clicked;
}"""


class Toggle:
    """A widget round trip: click 'Batch normalisation', wait for the parameter count to flip."""

    def __init__(self, page):
        self.page, self.pending, self.t_wall = page, False, None

    def start(self) -> bool:
        body = self.page.evaluate("() => document.body.innerText")
        m = PARAMS.search(body)
        if not m:
            return False
        want = "355,054" if m.group(1) == "353,254" else "353,254"
        self.t_wall = time.perf_counter()
        if not self.page.evaluate(ARM_JS, want):
            return False
        self.pending = True
        return True

    def result(self):
        """None while pending; seconds when done; float('nan') after 60 s without an answer."""
        r = self.page.evaluate("() => window.__rtt")
        if r and r.get("t1") is not None:
            self.pending = False
            return (r["t1"] - r["t0"]) / 1000.0
        if time.perf_counter() - self.t_wall > 60:
            self.pending = False
            return float("nan")
        return None

    def blocking(self, timeout=60.0):
        if not self.start():
            return None
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            v = self.result()
            if v is not None:
                return v
            time.sleep(0.02)
        return None


def _descendants(root: int) -> dict[int, str]:
    """pid -> kind ('server', 'chromium', 'other') for every process below `root`."""
    import os
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = {}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            try:
                cmd = open(f"/proc/{c}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            out[c] = "server" if "streamlit" in cmd else "chromium" if "chrom" in cmd else "other"
            todo.append(c)
    return out


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user+system) used so far by this benchmark's server, browsers and the rest."""
    import os
    tick = os.sysconf("SC_CLK_TCK")
    tot = {"server": 0.0, "chromium": 0.0, "other": 0.0}
    for pid, kind in _descendants(os.getpid()).items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            tot[kind] += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return tot


class HealthProbe:
    """Round trip of GET /_stcore/health every 0.5 s: the server's event loop, without any script run."""

    def __init__(self, url: str):
        import threading
        self.url, self.samples, self._stop = url + "/_stcore/health", [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import urllib.request
        while not self._stop.is_set():
            t = time.perf_counter()
            try:
                urllib.request.urlopen(self.url, timeout=30).read()
                self.samples.append(time.perf_counter() - t)
            except OSError:
                self.samples.append(float("nan"))
            self._stop.wait(0.5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join(35)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--students", type=int, default=5, help="sessions that train (the first one also stops)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--cap", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=270.0, help="seconds for the whole load phase")
    ap.add_argument("--debug-dir", default="/tmp/xray_lab_classroom", help="final page texts and screenshots")
    args = ap.parse_args()
    t_start = time.perf_counter()
    info = machine()
    from tests.browser import CHROMIUM, browser, streamlit_server
    if CHROMIUM is None:
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")

    result = {"benchmark": "classroom", "machine": info, "cap": args.cap, "students": args.students,
              "observer_sessions": 1}
    with streamlit_server(env={"XRAY_LAB_MAX_JOBS": str(args.cap)}) as url, browser() as b:
        result["server_ready_s"] = time.perf_counter() - t_start

        def new_page(query: str):
            ctx = b.new_context(viewport={"width": 1400, "height": 1000})
            ctx.route("**/*", lambda route: route.continue_() if route.request.url.startswith(url)
                      or route.request.url.startswith("data:") else route.abort())
            page = ctx.new_page()
            page.goto(url + query, wait_until="domcontentloaded", timeout=90_000)
            return page

        students = []
        for i in range(args.students):
            epochs, bs = (200, 32) if i == 0 else (args.epochs, BATCHES[(i - 1) % len(BATCHES)])
            students.append(Student(i, new_page(f"/?epochs={epochs}&batch_size={bs}"), epochs, bs))
        observer = new_page("/")
        t = time.perf_counter()
        for p in [s.page for s in students] + [observer]:
            p.get_by_text("Parameters").first.wait_for(timeout=120_000)
            p.get_by_role("button", name="▶ Train", exact=True).wait_for(timeout=180_000)
        result["all_pages_ready_s"] = time.perf_counter() - t
        log(f"{len(students) + 1} pages ready")

        obs_toggle = Toggle(observer)
        idle_rtt = [obs_toggle.blocking() for _ in range(4)]
        result["widget_rtt_idle_s"] = {"runs": idle_rtt, "median": median([r for r in idle_rtt if r])}
        log(f"idle rtt {idle_rtt}")

        # everyone presses Train, back to back
        probe = HealthProbe(url).__enter__()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        t0 = time.perf_counter()
        for s in students:
            s.page.get_by_role("button", name="▶ Train", exact=True).click(timeout=30_000, no_wait_after=True)
            s.t_click = time.perf_counter() - t0
        result["click_spread_s"] = students[-1].t_click

        deadline = t0 + args.deadline
        load_rtt, train_rtt = [], []
        stop = {"clicked_at": None}
        train_toggle = None
        stopper = students[0]
        while time.perf_counter() < deadline:
            now = time.perf_counter() - t0
            states = {s.idx: s.poll(now) for s in students}
            busy = [s for s in students if s.t_done is None]
            if not busy:
                break
            training_now = [s for s in students if s.t_training is not None and s.t_done is None]
            # Stop under load: the long run has trained 2 s and another job is training too
            if stop["clicked_at"] is None and stopper in training_now and now - stopper.t_training > 2.0 \
                    and any(s is not stopper for s in training_now):
                stop["batch_x_at_click"] = states[0]["batch_x"]
                m = list(PROGRESS.finditer(states[0]["body"]))
                stop["progress_at_click"] = m[-1].group(0) if m else None
                stop["others_training_at_click"] = [s.idx for s in training_now if s is not stopper]
                stop["t_click"] = time.perf_counter()
                stopper.page.get_by_role("button", name="■ Stop", exact=True).click(timeout=30_000,
                                                                                    no_wait_after=True)
                stop["click_call_s"] = time.perf_counter() - stop["t_click"]
                stop["clicked_at"] = now
            if stop.get("t_click") and "until_stopped_early_shown_s" not in stop \
                    and "(stopped early)" in states[0]["body"]:
                stop["until_stopped_early_shown_s"] = time.perf_counter() - stop["t_click"]
                stop["batch_x_at_stopped"] = states[0]["batch_x"]
                stop["t_shown"] = time.perf_counter()
                stop["final_progress"] = stopper.final
                log(f"stopped early shown after {stop['until_stopped_early_shown_s']:.2f}s")
            if stop.get("t_shown") and "batch_x_1_5s_later" not in stop and time.perf_counter() - stop["t_shown"] > 1.5:
                stop["batch_x_1_5s_later"] = states[0]["batch_x"]
            # widget round trips while there is load: the observer always, a training page now and then
            load_on = len(training_now) > 0 or any(s.positions and s.t_done is None for s in students)
            if obs_toggle.pending:
                r = obs_toggle.result()
                if r is not None:
                    load_rtt.append(r)
                    log(f"t={now:5.1f}s observer rtt {r:.2f}s ({len(training_now)} training)")
            elif load_on:
                obs_toggle.start()
            if train_toggle is not None and train_toggle.pending:
                r = train_toggle.result()
                if r is not None:
                    train_rtt.append(r)
                    log(f"t={now:5.1f}s training-page rtt {r:.2f}s")
            elif training_now and len(train_rtt) < 6 and (train_toggle is None or
                                                          time.perf_counter() - train_toggle.t_wall > 4):
                cand = [s for s in training_now if s is not stopper] or training_now
                train_toggle = Toggle(cand[0].page)
                train_toggle.start()
            time.sleep(0.1)
        # toggles still unanswered when the last job finished: give them a bounded last chance
        end = time.perf_counter() + 30
        while time.perf_counter() < end and (obs_toggle.pending or (train_toggle and train_toggle.pending)):
            for tg, sink in ((obs_toggle, load_rtt), (train_toggle, train_rtt)):
                if tg is not None and tg.pending:
                    r = tg.result()
                    if r is not None:
                        sink.append(r)
            time.sleep(0.1)
        result["load_phase_s"] = time.perf_counter() - t0
        cpu1, wall1 = cpu_seconds(), time.perf_counter()
        probe.__exit__()
        hs = [x for x in probe.samples if x == x]
        result["health_endpoint_rtt_s"] = {"n": len(probe.samples), "failed": len(probe.samples) - len(hs),
                                           "median": median(hs), "p90": pct(hs, 90), "max": max(hs) if hs else None}
        result["cpu_during_load"] = {k: {"cpu_s": cpu1[k] - cpu0[k], "cores": (cpu1[k] - cpu0[k]) / (wall1 - wall0)}
                                     for k in cpu0}
        result["loadavg_at_end_of_load"] = list(__import__("os").getloadavg())
        for s in students:   # last look
            s.poll(time.perf_counter() - t0)
        if args.debug_dir:
            import pathlib
            d = pathlib.Path(args.debug_dir)
            d.mkdir(parents=True, exist_ok=True)
            for s in students:
                (d / f"student{s.idx}.txt").write_text(s.last_body)
                s.page.screenshot(path=str(d / f"student{s.idx}.png"), full_page=True)
            result["debug_dir"] = str(d)

    # ---- verdicts ------------------------------------------------------------------
    ok_load = [r for r in load_rtt if r == r]      # NaN = no answer within 60 s
    ok_train = [r for r in train_rtt if r == r]
    result["widget_rtt_under_load_s"] = {
        "observer": {"n": len(load_rtt), "failed": len(load_rtt) - len(ok_load), "median": median(ok_load),
                     "p90": pct(ok_load, 90), "max": max(ok_load) if ok_load else None, "runs": load_rtt},
        "training_page": {"n": len(train_rtt), "failed": len(train_rtt) - len(ok_train),
                          "median": median(ok_train), "max": max(ok_train) if ok_train else None,
                          "runs": train_rtt}}
    per = []
    for s in students:
        per.append({"student": s.idx, "query": {"epochs": s.epochs, "batch_size": s.bs}, "steps_per_epoch": s.steps,
                    "first_state_after_click": s.first_state, "queue_positions_seen": sorted(s.positions),
                    "cap_shown": sorted(s.caps), "click_at_s": s.t_click,
                    "training_seen_at_s": s.t_training, "test_accuracy_shown_at_s": s.t_done,
                    "final_progress": s.final, "results_headers": sorted(s.results_seen),
                    "foreign_lines": s.foreign[:5], "url_kept_own_config": s.url_ok})
    result["sessions"] = per
    stop.pop("t_click", None)
    stop.pop("t_shown", None)
    result["stop_under_load"] = stop
    others = students[1:]
    checks = {
        "every_session_trains_or_shows_queue_position": all(
            s.first_state in ("training", "loading", "queued") and (s.seen_training or s.positions)
            for s in students),
        "someone_was_queued_with_position": any(s.positions for s in students),
        "cap_shown_is_cap": all(c == {args.cap} for c in (s.caps for s in students) if c),
        "all_jobs_finished_test_accuracy_shown": all(s.t_done is not None for s in students),
        "no_session_sees_another_job": all(not s.foreign and s.url_ok and s.progress_seen for s in students),
        "stop_shown_as_stopped_early": stop.get("until_stopped_early_shown_s") is not None,
        "stopped_chart_frozen": stop.get("batch_x_at_stopped") is not None
                                and stop.get("batch_x_1_5s_later") == stop.get("batch_x_at_stopped"),
        "others_unaffected_by_stop": all(s.final and s.final.startswith("Done") and
                                         f"epoch {s.epochs}/{s.epochs} · step " in s.final
                                         and s.final.endswith(f"/{s.steps}") for s in others),
        "observer_stayed_responsive": bool(ok_load) and len(ok_load) == len(load_rtt),
    }
    result["checks"] = checks
    result["all_checks_pass"] = all(checks.values())
    emit(result, t_start)


if __name__ == "__main__":
    main()
