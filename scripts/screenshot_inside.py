"""Screenshot of the Inside page for the README: the real app (`streamlit run app.py`) in
Debian's chromium via Playwright at 1400x1000, with a saved model uploaded in the sidebar.

    python scripts/screenshot_inside.py --model runs/t5/model.keras --out docs/inside.png
    python scripts/screenshot_inside.py --model runs/cnn/model.keras --out docs/inside-cnn.png \
        --scroll-to "Every layer's feature maps for this patch"

Streamlit scrolls inside its own container, so a screenshot shows one viewport:
--scroll-to puts that heading at the top of it first.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.browser import browser, streamlit_server  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", default=str(REPO / "docs" / "inside.png"))
    ap.add_argument("--index", type=int, default=0, help="test patch number")
    ap.add_argument("--scroll-to", default=None, help="a heading to bring to the top first")
    args = ap.parse_args()
    with streamlit_server() as url, browser() as b:
        page = b.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url + "/Inside", wait_until="domcontentloaded")
        page.get_by_text("Inside the network").first.wait_for(timeout=90_000)
        page.locator('section[data-testid="stSidebar"] input[type="file"]').set_input_files(args.model)
        page.get_by_text("Integrated gradients").first.wait_for(timeout=180_000)
        if args.index:
            box = page.get_by_label("Test patch number", exact=False)
            box.fill(str(args.index))
            box.press("Enter")
        page.get_by_text("What the first layer learned").first.wait_for(timeout=180_000)
        if args.scroll_to:
            page.get_by_text(args.scroll_to).first.evaluate("e => e.scrollIntoView({block: 'start'})")
        time.sleep(4)   # let plotly finish drawing
        page.screenshot(path=args.out, full_page=True)
        print(args.out)


if __name__ == "__main__":
    main()
