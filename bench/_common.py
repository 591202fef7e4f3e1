"""Shared helpers for the benchmarks: machine info, the real data, RSS, statistics, JSON output.

Every benchmark prints exactly one JSON document on stdout; progress goes to stderr."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REAL_DATA = os.environ.get("XRAY_LAB_BENCH_DATA", str(REPO.parent / "shared" / "data" / "jsrt_patches"))


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"nproc": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version()}
    try:
        info["loadavg_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import importlib.metadata as md
        info["versions"] = {p: md.version(p) for p in ("tensorflow", "keras", "streamlit", "plotly", "numpy")}
    except Exception:
        pass
    return info


def rss_mb() -> float:
    """Resident set size of this process (VmRSS from /proc/self/status), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def real_dataset(splits=("train", "validation", "test")):
    """The shared JSRT patches (read in place, never copied), restricted to `splits`."""
    from xray_core.data.load import load_dataset
    from xray_core.data.dataset import Dataset
    if not Path(REAL_DATA).is_dir():
        raise SystemExit(f"real data not found at {REAL_DATA} (set XRAY_LAB_BENCH_DATA)")
    ds = load_dataset(REAL_DATA)
    return Dataset(ds.name, {k: v for k, v in ds.splits.items() if k in splits}, list(ds.warnings))


def median(xs):
    return statistics.median(xs) if xs else None


def pct(xs, q: float):
    """q-th percentile (0..100), nearest-rank on the sorted values."""
    if not xs:
        return None
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))
    return s[k]


def rnd(x, nd=4):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: rnd(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [rnd(v, nd) for v in x]
    return x


def emit(result: dict, t_start: float | None = None) -> None:
    if t_start is not None:
        result["wall_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(rnd(result), indent=2))
