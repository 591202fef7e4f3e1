"""`python -m xray_core repeat | sweep | compare`: is the difference real?

    repeat  --preset P --seeds N [--seed S] [knobs] [--data D] [--limit-train N] --json OUT
    sweep   --preset P --knob K --values a,b,c --seeds N [...] --json OUT
    compare A.json B.json|FIGURE [--metric test_accuracy] --json OUT

A repeat JSON holds `runs` (one record per seed) and `test_accuracy`, `test_loss`,
`train_accuracy` (and `gap` = train − test) objects with `values`, `mean`, `sd`,
`ci95` ([low, high]); a sweep JSON holds the same per value under `points`; compare
writes `difference` (B − A), `ci95`, `p_value`, `test`, `verdict` and `seeds_needed`.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from xray_core.cli.common import _add_knobs, _check_data, _fail, _write_json, config_from_args
from xray_core.config import sweeps
from xray_core.errors import XrayLabError

METRICS = ("test_accuracy", "test_loss", "train_accuracy")


def add_commands(sub) -> None:
    r = sub.add_parser("repeat", help="train one setup with N seeds; mean, sd and 95%% interval")
    _add_knobs(r)
    _group_args(r)
    r.set_defaults(func=cmd_repeat)

    s = sub.add_parser("sweep", help="vary one knob over values × seeds; mean, sd and 95%% interval per value")
    _add_knobs(s)
    knobs = sweeps()   # the knob table's sweepable rows (light: no TensorFlow to parse arguments)
    s.add_argument("--knob", required=True, choices=list(knobs),
                   help="; ".join(f"{n} = {sw.label}" for n, (_k, sw) in knobs.items() if sw.label != n.replace("_", " "))
                   + "; filter_scale multiplies the CNN's filter counts")
    s.add_argument("--values", required=True, help="comma-separated, e.g. 16,32,64")
    _group_args(s)
    s.set_defaults(func=cmd_sweep)

    c = sub.add_parser("compare", help="is B different from A? (repeat JSONs, or B = a course figure)")
    c.add_argument("a", metavar="A.json", help="a repeat JSON")
    c.add_argument("b", metavar="B", help="a repeat JSON, or one figure such as the course's 69.1 (%%)")
    c.add_argument("--metric", default="test_accuracy", choices=METRICS)
    c.add_argument("--json")
    c.set_defaults(func=cmd_compare)


def _group_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, required=True, help="runs per setup, with seeds S … S+N−1")
    p.add_argument("--data", default="phantom", help="phantom (default), a folder or a .zip")
    p.add_argument("--limit-train", type=int, help="use only N training patches")
    p.add_argument("--json", help="write the runs and their statistics here")


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f} %"


def _summary_line(name: str, s: dict, percent: bool = True) -> str:
    if s["mean"] is None:
        return f"{name}: no finished runs"
    f = (lambda v: f"{100 * v:.1f}") if percent else (lambda v: f"{v:.3f}")
    unit = " %" if percent else ""
    if s["sd"] is None:
        return f"{name}: {f(s['mean'])}{unit} (one run)"
    return (f"{name}: {f(s['mean'])} ± {f(s['sd'])}{unit} (mean ± sd, n={s['n']}; "
            f"95% CI {f(s['ci95'][0])}–{f(s['ci95'][1])}{unit})")


def _print_run(rec: dict) -> None:
    where = f"[{rec['key']}] " if rec["key"] is not None else ""
    if rec["state"] == "done":
        print(f"{where}seed {rec['seed']}: test accuracy {rec['test_accuracy']:.4f} loss {rec['test_loss']:.4f} "
              f"train accuracy {rec['train_accuracy']:.4f} ({rec['fit_seconds']:.1f}s)", flush=True)
    else:
        print(f"{where}seed {rec['seed']}: {rec['state']}{': ' + rec['error'] if rec['error'] else ''}", flush=True)


def _failed(records: list[dict]) -> int:
    bad = [r for r in records if r["state"] != "done"]
    if bad:
        r = bad[0]
        return _fail(f"{len(bad)} of {len(records)} runs did not finish (seed {r['seed']}: "
                     f"{r['error'] or r['state']}); the finished ones are in the JSON")
    return 0


def cmd_repeat(args) -> int:
    from xray_core.runs.experiments import check_seeds, repeat
    cfg = config_from_args(args)
    seed = cfg.seed
    check_seeds(args.seeds, seed)
    _check_data(cfg.data)
    res = repeat(cfg, args.seeds, seed, on_finish=_print_run)
    for m in METRICS:
        print(_summary_line(m.replace("_", " "), res[m], percent=m != "test_loss"))
    if res["reported"] and "test_accuracy" in res["reported"]:
        print(f"course ({res['preset']}, one run): test accuracy {res['reported']['test_accuracy']} %")
    _write_json(args.json, res)
    return _failed(res["runs"])


def cmd_sweep(args) -> int:
    from xray_core.runs.experiments import check_seeds, parse_values, start_sweep, with_knob
    cfg = config_from_args(args)
    check_seeds(args.seeds, cfg.seed)
    values = parse_values(args.knob, args.values)
    for v in values:  # every value checked before anything trains
        with_knob(cfg, args.knob, v)
    _check_data(cfg.data)
    res = start_sweep(cfg, args.knob, values, args.seeds, cfg.seed).wait(on_finish=_print_run).result()
    for p in res["points"]:
        print(f"{args.knob} = {p['value']}: " + _summary_line("test accuracy", p["test_accuracy"]))
    _write_json(args.json, res)
    return _failed([r for p in res["points"] for r in p["runs"]])


def _read_group(path: str, metric: str) -> tuple[list[float], str]:
    p = Path(path)
    if not p.is_file():
        raise XrayLabError(f"{path}: no such file (give a JSON written by `repeat --json`)")
    try:
        d = json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise XrayLabError(f"{path}: not a JSON file ({e.__class__.__name__})") from None
    if not isinstance(d, dict) or d.get("kind", "repeat") != "repeat" or not isinstance(d.get(metric), dict):
        raise XrayLabError(f"{path}: not a repeat result (no {metric!r} object; sweeps cannot be compared whole)")
    values = d[metric].get("values")
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               and math.isfinite(v) for v in values):
        raise XrayLabError(f"{path}: {metric}.values must be a list of numbers")
    if len(values) < 2:
        raise XrayLabError(f"{path}: {len(values)} finished run(s); comparing needs at least 2 seeds")
    label = d.get("preset") or Path(path).stem
    return [float(v) for v in values], label


def _read_figure(text: str, metric: str) -> float | None:
    """'69.1', '69.1%' or '0.691' -> 0.691 for accuracies (course figures are in %); None if not a number."""
    t = text.strip()
    pct = t.endswith("%")
    try:
        v = float(t.rstrip("%"))
    except ValueError:
        return None
    if not math.isfinite(v):
        raise XrayLabError(f"{text}: not a finite number")
    if metric == "test_loss":
        if pct or v < 0:
            raise XrayLabError(f"{text}: a loss figure is a number >= 0")
        return v
    if pct or v > 1:
        v /= 100
    if not 0 <= v <= 1:
        raise XrayLabError(f"{text}: an accuracy is between 0 and 100 %")
    return v


def cmd_compare(args) -> int:
    from xray_core import stats   # scipy: only the command that needs it
    a, a_label = _read_group(args.a, args.metric)
    figure = None if Path(args.b).is_file() else _read_figure(args.b, args.metric)
    if figure is None:
        b, b_label = _read_group(args.b, args.metric)
        res = stats.compare(a, b)
        res["b"]["label"] = b_label
    else:
        res = stats.compare_to_value(a, figure)
        res["b"]["label"] = f"figure {args.b}"
    res["a"]["label"] = a_label
    res["metric"] = args.metric
    print(f"{res['b']['label']} − {a_label} ({args.metric.replace('_', ' ')}): {res['verdict_text']}")
    _write_json(args.json, res)
    return 0
