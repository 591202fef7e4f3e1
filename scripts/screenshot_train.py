"""Screenshots of the Train and Classify pages for the README, from the real app
(`streamlit run app.py`) in Debian's chromium via Playwright, at a laptop's 1400x1000 and a
projector's 1280x720 (issue 10).

    python scripts/screenshot_train.py [--out docs] [--epochs 15]
writes train-start, train-live, train-done, train-results, classify, classify-why (a click
on the anatomy map explained) at 1400x1000 and the same names with -720p (1280x720) into --out.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser import BATCH_POINTS_JS, PICKER_JS, browser, streamlit_server, wait_until  # noqa: E402

SIZES = {"": (1400, 1000), "-720p": (1280, 720)}


def shoot(page, out: Path, name: str, suffix: str, full: bool = False) -> None:
    time.sleep(1.5)   # let plotly finish drawing
    path = out / f"{name}{suffix}.png"
    page.screenshot(path=str(path), full_page=full)
    print(path)


def train_pages(b, url: str, out: Path, epochs: int) -> None:
    for suffix, (w, h) in SIZES.items():
        page = b.new_page(viewport={"width": w, "height": h})
        page.goto(f"{url}/?epochs={epochs}", wait_until="domcontentloaded")
        page.get_by_role("button", name="▶ Train", exact=True).wait_for(timeout=240_000)
        time.sleep(3)
        shoot(page, out, "train-start", suffix)
        page.get_by_role("button", name="▶ Train", exact=True).click()
        wait_until(lambda: page.evaluate(BATCH_POINTS_JS) > 1.5, timeout=240)
        shoot(page, out, "train-live", suffix)
        page.get_by_text("full results below").first.wait_for(timeout=300_000)
        shoot(page, out, "train-done", suffix)
        page.get_by_text("full results below").first.click()
        page.get_by_text("Confusion matrix").first.wait_for(timeout=60_000)
        page.get_by_text("Results ·").first.scroll_into_view_if_needed()
        shoot(page, out, "train-results", suffix)
        classify(page, url, out, suffix)
        page.close()


def classify(page, url: str, out: Path, suffix: str) -> None:
    """The Classify page with one of the phantom's films, using the session's run."""
    page.get_by_role("link", name="Classify").first.click()
    page.get_by_text("Classify").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Map a test radiograph").first.wait_for(timeout=120_000)
    page.get_by_role("button", name="Map a test radiograph").first.click()
    time.sleep(10)    # the anatomy map of one film (FC: well under a second of work)
    shoot(page, out, "classify", suffix)
    page.get_by_text("Why this colour?").first.click()
    xy = wait_until(lambda: page.evaluate(PICKER_JS, [80, 120]), timeout=60)   # the right lung field
    time.sleep(1.0)
    xy = page.evaluate(PICKER_JS, [80, 120])
    page.mouse.move(xy[0] - 5, xy[1] - 5)
    page.mouse.click(*xy)
    time.sleep(4)
    page.evaluate(PICKER_JS, [80, 120])   # keep the clicked map in view
    shoot(page, out, "classify-why", suffix)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(REPO / "docs"))
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with streamlit_server() as url, browser() as b:
        train_pages(b, url, out, args.epochs)


if __name__ == "__main__":
    main()
