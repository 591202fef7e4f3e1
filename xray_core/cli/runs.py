"""`python -m xray_core runs …`: list, show, delete and export the runs in the run store.

    runs list [--workspace W] [--json [OUT|-]]
    runs show ID [--json [OUT|-]]
    runs delete ID
    runs export --workspace W --format md|html|csv --out FILE [--runs ID,ID,…]

Errors (a bad id or workspace name, nothing to export) raise StoreError, which the
CLI's main() prints as one line on stderr with a non-zero exit.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from xray_core.errors import StoreError
# the store (SQLAlchemy) is imported by the commands that use it: `--help` and other commands stay light


def _emit_json(obj, dest: str | None) -> None:
    text = json.dumps(obj, indent=2, allow_nan=False)
    if dest in (None, "-"):
        print(text)
    else:
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        Path(dest).write_text(text + "\n")


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _line(r) -> str:
    test = r.test or {}
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
    return (f"{r.id}  {r.workspace:<22.22} {r.state:<11} {r.epochs_done:>3}/{r.epochs:<3} "
            f"test {_pct(test.get('accuracy')):>6}  {when}  {r.label}")


def cmd_list(args) -> int:
    from xray_core.runs.recorder import live_run_ids
    from xray_core.runs.store import STATES, check_workspace, get_store
    if args.workspace is not None:
        check_workspace(args.workspace)
    if args.state is not None and args.state not in STATES:
        raise StoreError(f"unknown state {args.state!r}: choose one of {', '.join(STATES)}")
    store = get_store()
    store.recover(live_run_ids())  # a run whose process died shows as interrupted, not as training forever
    runs = store.list_runs(args.workspace, states=[args.state] if args.state else None, limit=args.limit)
    if args.json is not None:
        _emit_json([r.to_json() for r in runs], args.json)
    else:
        for r in runs:
            print(_line(r))
        if not runs:
            print("no runs" + (f" in workspace {args.workspace}" if args.workspace else ""))
    return 0


def _get(run_id: str):
    from xray_core.runs.recorder import live_run_ids
    from xray_core.runs.store import get_store
    store = get_store()
    store.recover(live_run_ids())
    run = store.get(run_id)
    if run is None:
        raise StoreError(f"no run {run_id!r} (see `python -m xray_core runs list`)")
    return run


def cmd_show(args) -> int:
    run = _get(args.id)
    if args.json is not None:
        _emit_json(run.to_json(), args.json)
        return 0
    print(_line(run))
    h = run.history
    for i, loss in enumerate(h.get("loss", [])):
        va = h.get("val_accuracy") or []
        print(f"  epoch {i + 1}: loss {loss if loss is None else round(loss, 4)} "
              f"acc {_pct((h.get('accuracy') or [None])[i] if i < len(h.get('accuracy') or []) else None)}"
              + (f" val acc {_pct(va[i])}" if i < len(va) else ""))
    if run.test:
        loss = run.test.get("loss")
        print(f"  test accuracy {_pct(run.test.get('accuracy'))}, loss {'–' if loss is None else f'{loss:.4f}'}")
    if run.error:
        print(f"  {run.error}")
    print(f"  model: {run.model_path or 'not kept'}")
    return 0


def cmd_delete(args) -> int:
    from xray_core.runs.store import get_store
    if not get_store().delete(args.id):
        raise StoreError(f"no run {args.id!r} (see `python -m xray_core runs list`)")
    print(f"deleted run {args.id}")
    return 0


def cmd_export(args) -> int:
    from xray_core.runs.report import build_report, export
    from xray_core.runs.store import check_workspace, get_store
    check_workspace(args.workspace)
    ids = [s.strip() for s in args.runs.split(",") if s.strip()] if args.runs else None
    report = build_report(get_store(), args.workspace, ids)
    if not report.rows:
        raise StoreError(f"workspace {args.workspace!r} has no finished run of a course preset to report "
                         "(train one, or name runs with --runs)")
    text = export(report, args.format)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {len(report.rows)} experiment(s) to {out}"
          + (f"; not run yet: {', '.join(report.missing)}" if report.missing else ""), file=sys.stderr)
    return 0


def add_commands(subparsers) -> None:
    """Register `runs` and its sub-commands on the CLI's sub-parsers."""
    r = subparsers.add_parser("runs", help="list, show, delete and export recorded runs")
    sub = r.add_subparsers(dest="runs_command", required=True, parser_class=type(r))

    ls = sub.add_parser("list", help="runs, newest first")
    ls.add_argument("--workspace", help="only this workspace (the CLI's own is 'cli')")
    ls.add_argument("--state", help="only runs in this state")
    ls.add_argument("--limit", type=int, default=500)
    ls.add_argument("--json", nargs="?", const="-", metavar="OUT|-", help="print JSON (or write it to OUT)")
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="one run: curves, results, model")
    sh.add_argument("id")
    sh.add_argument("--json", nargs="?", const="-", metavar="OUT|-")
    sh.set_defaults(func=cmd_show)

    de = sub.add_parser("delete", help="delete a run and its model files")
    de.add_argument("id")
    de.set_defaults(func=cmd_delete)

    ex = sub.add_parser("export", help="the homework report of a workspace as md, html or csv")
    ex.add_argument("--workspace", required=True)
    ex.add_argument("--format", required=True, choices=("md", "html", "csv"))
    ex.add_argument("--out", required=True)
    ex.add_argument("--runs", help="comma-separated run ids (default: the latest finished run of each preset)")
    ex.set_defaults(func=cmd_export)
