"""What one watcher's refresh of the live chart costs the server: before (the figure
rebuilt on every poll, per-batch trace capped at 2,000 points by every k-th point) and now
(charts.live_curves: built once per version of the run's data, 400 points), each followed
by what st.plotly_chart does with a figure (to_dict, to_json). 40 epochs, 12,000 batches.

    python -m bench.watch_cost
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import time

import numpy as np
import plotly.io
import plotly.tools

from bench._common import emit, machine, median


def main() -> None:
    from tests.test_charts import _snap
    from xray_ui import charts
    snap = _snap(12_000, 40)

    def st_work(fig) -> str:
        return plotly.io.to_json(plotly.tools.return_figure_from_figure_or_data(fig, validate_figure=True),
                                 validate=False)

    def every_kth(x, y, limit=2000):
        idx = np.unique(np.r_[np.linspace(0, len(x) - 1, limit).astype(int), len(x) - 1])
        return [x[i] for i in idx], [y[i] for i in idx]

    def before() -> str:
        real = charts.downsample
        charts.downsample = every_kth
        try:
            return st_work(charts.curves(snap.history, snap.batch_epoch, snap.batch_loss))
        finally:
            charts.downsample = real

    def now() -> str:
        return st_work(charts.live_curves(snap))

    out = {"bench": "watch_cost", "machine": machine()}
    for name, fn in (("before", before), ("now", now)):
        fn()
        cpu = []
        for _ in range(30):
            t = time.process_time()
            spec = fn()
            cpu.append(time.process_time() - t)
        out[name] = {"cpu_ms_median": 1000 * median(cpu), "json_kb": len(spec) / 1024}
    emit(out)


if __name__ == "__main__":
    main()
