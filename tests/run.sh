#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run it.
# Usage (from the repo root): bash tests/run.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # The browser end-to-end tests drive Debian's Chromium (Playwright never downloads one here).
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # The run-store tests start a real PostgreSQL server from Debian's binaries (tests/pg.py).
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
    || echo "warning: could not install postgresql; PostgreSQL store tests will be skipped" >&2
fi
python -m pip install -q -r requirements-dev.txt
# Ray is not in the app's default install (README "Scaling out"), but CI tests the Ray backend.
python -m pip install -q -r requirements-scale.txt
exec python -m pytest "$@"
