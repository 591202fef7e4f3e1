"""`python -m xray_core <command>`: train, evaluate, summary, presets, phantom, classify, runs.

Every command can write its result as JSON (`--json PATH`). Bad values and bad
inputs exit non-zero with one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import sys
import time

from xray_core import CLASSES
from xray_core.config import MAP_KNOBS, map_default
from xray_core.cli.classes import add_commands as add_class_commands
from xray_core.cli.experiments import add_commands as add_experiment_commands
from xray_core.cli.explain import add_commands as add_explain_commands
from xray_core.cli.runs import add_commands as add_runs_commands
from xray_core.errors import ConfigError, XrayLabError, one_line

PROG = "python -m xray_core"


from xray_core.cli.common import (  # noqa: F401  (config_from_args: tests and other commands use it)
    _Parser, _add_knobs, _check_data, _fail, _write_json, config_from_args)


# ---- commands --------------------------------------------------------------------

def cmd_train(args) -> int:
    turn = None
    if getattr(args, "class_experiment", None):  # the setup the class experiment assigns (cli/classes.py)
        from xray_core.cli.classes import class_turn
        turn = class_turn(args)
    cfg = turn.config if turn else config_from_args(args).resolved()
    _check_data(cfg.data)
    from xray_core.data.for_run import load_for_run
    from xray_core.runs import service
    from xray_core.runs.store import check_workspace, get_store
    from xray_core.train.estimate import dataset_sizes, estimate
    from xray_core.train.states import DONE, STOPPED
    store = get_store()
    ds = load_for_run(cfg.data, cfg.arch)     # patches, or whole films for arch segment (one line if not)
    sizes = dataset_sizes(ds)
    try:  # measured on this machine (a few timed steps, cached per model): see estimate.py
        est = estimate(cfg, *sizes)
    except Exception as e:  # an estimate must never stop a run: said once, on stderr
        print(f"(no time estimate: {one_line(e)})", file=sys.stderr)
        est = None
    if est:
        print(f"estimated {est['total']:.1f}s ({est['source']})", flush=True)
    backend = "ray" if (args.backend or service.default_backend(False)) == "ray" else "thread"
    # recorded from now on (`runs list`); the dataset loaded once, for the estimate and the run
    run = service.start(cfg, workspace=check_workspace(args.workspace), dataset=ds, backend=backend, store=store,
                        **(turn.start_kw if turn else {}))
    job = run.job
    last_epoch = -1
    try:
        while True:
            job.join(0.5)
            snap = job.snapshot()
            if snap.epoch != last_epoch and snap.history["loss"]:
                last_epoch = snap.epoch
                h = snap.history
                val = (f" val_loss {h['val_loss'][-1]:.4f} val_acc {h['val_accuracy'][-1]:.3f}"
                       if h["val_accuracy"] else "")
                print(f"epoch {snap.epoch}/{snap.epochs} loss {h['loss'][-1]:.4f} "
                      f"acc {h['accuracy'][-1]:.3f}{val} ({snap.elapsed:.1f}s)", flush=True)
            if snap.finished:
                break
    except KeyboardInterrupt:
        job.stop()
        job.join()
    run.recorder.join()  # its end (result, model) is written before we exit
    snap = job.snapshot()
    if snap.state not in (DONE, STOPPED):
        return _fail(snap.error or f"training ended as {snap.state}")
    record = job.record()
    record["run_id"] = run.run_id
    if turn:
        record.update(turn.record)
    timing = dict(record.get("timing") or {})
    total = (job.ended_at or time.perf_counter()) - job.started_at
    timing["total_seconds"] = total
    timing["estimated_seconds"] = est["total"] if est else None
    timing["estimate"] = est
    record["timing"] = timing
    # the recorder feeds a finished run's actual times back into the estimate (estimate.learn)
    if args.out:
        paths = job.save(args.out)
        record["saved"] = paths
    test = record.get("test")
    if test:
        print(f"test accuracy {test['accuracy']:.4f} test loss {test['loss']:.4f}")
        if "dice" in test:      # a segmentation run: pixel accuracy, Dice per class, the prior beside it
            _print_film_scores(test)
    _write_json(args.json, record)
    return 0


def _print_film_scores(res: dict) -> None:
    def dice(d):
        return " ".join(f"{c[0]} {'-' if v is None else f'{v:.3f}'}" for c, v in d.items())
    print(f"  map: pixel accuracy {res['pixel_accuracy']:.4f}, Dice {dice(res['dice'])}, "
          f"{res['map_ms_per_film']:.1f} ms per film")
    pos = res.get("position")
    if pos:
        print(f"  map with position (model x prior): pixel accuracy {pos['pixel_accuracy']:.4f}, "
              f"Dice {dice(pos['dice'])}")
    prior = res.get("prior")
    if prior:
        print(f"  prior (image ignored): pixel accuracy {prior['pixel_accuracy']:.4f}, Dice {dice(prior['dice'])}")
    elif res.get("prior_note"):
        print(f"  {res['prior_note']}")


def cmd_evaluate(args) -> int:
    from xray_core.data.load import load_dataset
    from xray_core.maps.inference import load_model
    from xray_core.train.job import evaluate_predictions
    _check_data(args.data)
    model = load_model(args.model)
    from xray_core.data.films import dataset_kind
    from xray_core.maps.inference import is_segmentation_model
    if is_segmentation_model(model) or (args.data != "phantom" and dataset_kind(args.data) == "films"):
        # whole films: every film's map against its label map, the prior's beside it
        from xray_core.maps.film_eval import evaluate_films
        res = evaluate_films(model, args.data, args.split, seed=args.seed)
        res.update({"model": args.model, "data": args.data})
        print(f"{args.split}: pixel accuracy {res['pixel_accuracy']:.4f} loss {res['loss']:.4f} "
              f"(films={res['films']})")
        _print_film_scores(res)
        _write_json(args.json, res)
        return 0
    ds = load_dataset(args.data, seed=args.seed)
    split = ds.split(args.split)
    probs = model.predict(split.x, batch_size=1024, verbose=0)
    res = evaluate_predictions(split.y, probs)
    res.update({"split": args.split, "model": args.model, "data": args.data, "classes": list(CLASSES)})
    print(f"{args.split}: accuracy {res['accuracy']:.4f} loss {res['loss']:.4f} (n={res['n']})")
    _write_json(args.json, res)
    return 0


def cmd_summary(args) -> int:
    from xray_core.models import layer_table
    cfg = config_from_args(args)
    table = layer_table(cfg)
    w = max([16] + [len(r["name"]) + 2 for r in table["layers"]])   # the U-Net's bottleneck_conv1, ...
    print(f"{'layer':<{w}}{'type':<22}{'output shape':<22}{'params':>10}")
    for r in table["layers"]:
        print(f"{r['name']:<{w}}{r['type']:<22}{r['output_shape']:<22}{r['params']:>10,}")
    print(f"total params: {table['total_params']:,} (trainable {table['trainable_params']:,})")
    _write_json(args.json, {"config": cfg.resolved().to_dict(), **table})
    return 0


def cmd_presets(args) -> int:
    from xray_core.presets import PRESETS
    out = []
    for p in PRESETS.values():
        r = p.reported
        figs = ", ".join(f"{k} {v}" for k, v in r.items())
        print(f"{p.name:<10} {p.title:<40} course: {figs}")
        out.append({"name": p.name, "title": p.title, "lesson": p.lesson,
                    "config": p.config.resolved().to_dict(), "reported": r})
    _write_json(args.json, out)
    return 0


def cmd_phantom(args) -> int:
    from xray_core.data.phantom.build import write_phantom
    if args.radiographs < 3:
        raise ConfigError(f"--radiographs must be at least 3 (one per split), got {args.radiographs}")
    t = time.perf_counter()
    counts = write_phantom(args.out, n_radiographs=args.radiographs, seed=args.seed)
    print(f"wrote the phantom to {args.out}: {counts} ({time.perf_counter() - t:.1f}s)")
    _write_json(args.json, {"out": args.out, "counts": counts, "seed": args.seed})
    return 0


def cmd_settings(args) -> int:
    from xray_core import settings
    rows = settings.table()
    for r in rows:
        value = "-" if r["value"] is None else r["value"]
        print(f"{r['name']:<32} {str(value):<12.40} {r['doc']}")
    _write_json(args.json, rows)
    return 0


def cmd_classify(args) -> int:
    from xray_core.maps.inference import classify_files, load_model
    lo, hi = MAP_KNOBS["stride"].min, MAP_KNOBS["stride"].max   # the map knobs' table, as the Classify page
    if not lo <= args.stride <= hi:
        raise ConfigError(f"--stride must be from {lo} to {hi}, got {args.stride}")
    model = load_model(args.model)
    results = classify_files(model, args.files, map_dir=args.map_dir, stride=args.stride,
                             method="auto" if args.method == "dense" else args.method)
    if args.method == "dense" and any(r.get("method") == "patches" for r in results):
        # asked for dense on a model that cannot go dense: say so once, the maps are still made
        reason = next(r["method_reason"] for r in results if r.get("method") == "patches")
        print(f"note: --method dense does not apply; {reason[0].lower()}{reason[1:]}", file=sys.stderr)
    for r in results:
        print(f"{r['file']}: {r['label']}" if r["ok"] else f"{r['file']}: error: {r['error']}")
    _write_json(args.json, results)
    if not any(r["ok"] for r in results):
        return _fail(f"none of the {len(results)} file(s) could be classified")
    return 0


# ---- entry point -----------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="X-ray Lab engine: train and use the course's chest X-ray models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (streams one line per epoch)")
    _add_knobs(t, train=True)
    t.add_argument("--data", default="phantom", help="phantom (default), a folder or a .zip")
    t.add_argument("--out", help="folder for model.keras and run.json")
    t.add_argument("--json", help="write the run record here")
    t.add_argument("--backend", choices=("local", "ray"), default=None,
                   help="where the job runs: this process (local, default) or a Ray cluster (RAY_ADDRESS, "
                        "else a local Ray started now); default XRAY_LAB_BACKEND")
    t.add_argument("--workspace", default="cli", help="record the run in this workspace of the run store")
    t.add_argument("--class-experiment", metavar="ID",
                   help="train the setup this class experiment assigns to the workspace (see `class open`)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="evaluate a saved .keras model on a dataset split")
    e.add_argument("--model", required=True)
    e.add_argument("--data", default="phantom")
    e.add_argument("--split", default="test", choices=("train", "validation", "test"))
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("summary", help="layer table and parameter counts for a config")
    _add_knobs(s)
    s.add_argument("--json")
    s.set_defaults(func=cmd_summary)

    pr = sub.add_parser("presets", help="the course's seven experiments and their reported figures")
    pr.add_argument("--json")
    pr.set_defaults(func=cmd_presets)

    ph = sub.add_parser("phantom", help="write the built-in chest phantom in the course layout")
    ph.add_argument("--out", required=True)
    ph.add_argument("--radiographs", type=int, default=217)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--json")
    ph.set_defaults(func=cmd_phantom)

    c = sub.add_parser("classify", help="classify image files; map whole radiographs")
    c.add_argument("--model", required=True)
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--map-dir", help="per radiograph, write NAME.png (the label map: pixel value = class "
                                     "index 0-3, so it looks black; it is data) and NAME.overlay.png "
                                     "(the film tinted in the app's class colours: the one to look at)")
    stride, method = MAP_KNOBS["stride"], MAP_KNOBS["method"]   # the map knobs' rows (config.MAP_KNOBS)
    c.add_argument("--stride", type=int, default=map_default("stride"),
                   help=f"{stride.label} ({stride.min} to {stride.max}). {stride.help}")
    c.add_argument("--method", choices=method.choices, default=map_default("method"), help=method.help)
    c.add_argument("--json")
    c.set_defaults(func=cmd_classify)
    se = sub.add_parser("settings", help="every XRAY_LAB_* setting: the value in force, its default, what it does")
    se.add_argument("--json")
    se.set_defaults(func=cmd_settings)
    add_runs_commands(sub)
    add_experiment_commands(sub)   # repeat, sweep, compare
    add_explain_commands(sub)      # explain
    add_class_commands(sub)        # class open | status | close | list
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    except XrayLabError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted", code=130)
    except Exception as e:  # the promise is one line, never a traceback
        return _fail(one_line(e))
