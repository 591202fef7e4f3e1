"""The app against the CLI for the same run (issue 10): is a click in the browser at least as
fast as a whole `python -m xray_core train` process?

For each repetition, alternated:
- CLI: `python -m xray_core train --epochs E --json OUT` (default data: the built-in
  phantom, its cache warm), wall time of the whole process (imports, data, fit, test, save);
- app: a real `streamlit run app.py` (started once, page loaded once so the dataset is
  cached and the idle workers are warm), a fresh headless-Chromium page with `?epochs=E`
  (a new workspace), the click on ▶ Train, then the time until the first per-batch point is
  drawn and until the "Test accuracy" result is on screen.
Prints one JSON: medians, every repetition, and the ratio CLI seconds / app seconds
(≥ 1.0: the app is at least as fast).

    python -m bench.app_vs_cli [--epochs 15] [--reps 3]
Needs Debian's chromium and Playwright (requirements-dev.txt); loopback only.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import os
import subprocess
import sys
import tempfile
import time

from bench._common import REPO, emit, log, machine, median


def cli_run(epochs: int, env: dict, out: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "xray_core", "train", "--epochs", str(epochs), "--json", out],
                   cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def app_run(b, url: str, epochs: int) -> dict:
    from tests.browser import BATCH_POINTS_JS
    page = b.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{url}/?epochs={epochs}", wait_until="domcontentloaded")
        train = page.get_by_role("button", name="▶ Train", exact=True)
        train.wait_for(timeout=240_000)
        page.wait_for_function("() => !Array.from(document.querySelectorAll('button'))"
                               ".find(b => b.innerText.includes('Train')).disabled", timeout=240_000)
        t0 = time.perf_counter()
        train.click()
        first = None
        end = t0 + 600
        while time.perf_counter() < end:
            if first is None and page.evaluate(BATCH_POINTS_JS):
                first = time.perf_counter() - t0
            if page.get_by_text("Test accuracy").count():
                return {"first_point_s": first, "results_s": time.perf_counter() - t0}
            time.sleep(0.05)
        return {"first_point_s": first, "results_s": None}
    finally:
        page.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    from tests.browser import browser, streamlit_server
    t_start = time.perf_counter()
    result = {"bench": "app_vs_cli", "machine": machine(), "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="xray-lab-avc-") as home:
        env = {**os.environ, "XRAY_LAB_HOME": home}
        log("warming the phantom cache with one CLI run (not counted)")
        cli_run(1, env, os.path.join(home, "warm.json"))
        reps = []
        with streamlit_server(env={"XRAY_LAB_HOME": home}) as url, browser() as b:
            warm = b.new_page()
            warm.goto(url + "/", wait_until="domcontentloaded")
            warm.get_by_role("button", name="▶ Train", exact=True).wait_for(timeout=240_000)
            warm.close()
            time.sleep(10)  # the idle workers import TensorFlow and warm up (worker.warm_up) after the first page
            for i in range(args.reps):
                c = cli_run(args.epochs, env, os.path.join(home, f"cli{i}.json"))
                a = app_run(b, url, args.epochs)
                rep = {"cli_s": c, **a, "ratio": c / a["results_s"] if a["results_s"] else None}
                log(f"rep {i + 1}: {rep}")
                reps.append(rep)
    ok = [r for r in reps if r["results_s"]]
    result["result"] = {
        "cli_s_median": median([r["cli_s"] for r in reps]),
        "app_click_to_results_s_median": median([r["results_s"] for r in ok]),
        "app_first_point_s_median": median([r["first_point_s"] for r in ok if r["first_point_s"]]),
        "ratio_cli_over_app_median": median([r["ratio"] for r in ok]),
        "reps": reps,
        "loadavg_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    emit(result, t_start)


if __name__ == "__main__":
    main()
