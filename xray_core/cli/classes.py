"""`python -m xray_core class …`: the class as one experiment (issue 25; engine in
xray_core/runs/classes.py).

    class open --setups p1-task1,p1-task2 [--title T] [knobs for every setup] [--data D]
               [--password P|-] [--json [OUT|-]]                 -> the experiment's `id`
    class status ID [--json [OUT|-]]       -> `setups` (preset, n, mean, ci95, values, …), `compare`
    class close ID [--password P|-]
    class list [--open] [--json [OUT|-]]
    train --class-experiment ID [--workspace W] --json J         (cli/main.py; see `class_turn`)

With XRAY_LAB_TEACHER_PASSWORD set, `open` and `close` are the teacher's: the password is
taken from --password (`-`: one line on standard input, kept out of the process list),
else from the variable itself in the caller's environment; a wrong one is refused in one
line. Errors exit non-zero with one line on stderr (cli/main.py's main()). The store
(SQLAlchemy) and stats (scipy) are imported by the commands, not to parse arguments.
"""
from __future__ import annotations

import hmac
import json
import sys
from dataclasses import dataclass, field

from xray_core.cli.common import _add_knobs, _knob_names, _write_json
from xray_core.errors import ConfigError, XrayLabError


def _emit(obj, dest: str | None) -> None:
    if dest == "-":
        print(json.dumps(obj, indent=2, allow_nan=False))
    elif dest:
        _write_json(dest, obj)


def check_teacher(password: str | None) -> None:
    """Refuse in one line unless the teacher's password is given (see the module's text)."""
    from xray_core import settings
    expected = settings.get("XRAY_LAB_TEACHER_PASSWORD")
    if not expected:
        return
    if password == "-":
        password = sys.stdin.readline().rstrip("\r\n")
    given = expected if password is None else password
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise XrayLabError("wrong teacher password (XRAY_LAB_TEACHER_PASSWORD is set on this server: "
                           "give it with --password)")


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def cmd_open(args) -> int:
    check_teacher(args.password)
    if args.preset:
        raise ConfigError("class open takes its presets in --setups, e.g. --setups p1-task1,p1-task2")
    names = [s.strip() for s in (args.setups or "").split(",") if s.strip()]
    if not names:
        raise ConfigError("--setups: give two or more presets, e.g. --setups p1-task1,p1-task2")
    overrides = {n: getattr(args, n) for n in _knob_names(args) if getattr(args, n) is not None}
    if args.data is not None:
        from xray_core.cli.common import _check_data
        _check_data(args.data)
        overrides["data"] = args.data
    from xray_core.runs import classes
    cid = classes.open(names, args.title or "", overrides=overrides)
    exp = classes.get(cid)
    print(f"opened class experiment {cid}: {exp['title']}", file=sys.stderr if args.json == "-" else sys.stdout)
    print(f"students join with: python -m xray_core train --class-experiment {cid} --workspace THEIRS",
          file=sys.stderr if args.json == "-" else sys.stdout)
    _emit({"id": cid, "title": exp["title"], "state": exp["state"], "setups": exp["setups"]}, args.json)
    return 0


def cmd_status(args) -> int:
    from xray_core.runs import classes
    st = classes.status(args.id)
    if args.json == "-":
        _emit(st, "-")
        return 0
    print(f"{st['id']} ({st['state']}): {st['title']}; {st['assigned']} turn(s) assigned")
    for s in st["setups"]:
        ci = f" [{_pct(s['ci95'][0])}, {_pct(s['ci95'][1])}]" if s["ci95"] else ""
        vals = ", ".join(_pct(v) for v in s["values"])
        print(f"  {s['setup'] + 1}. {s['label']}: n {s['n']}, mean {_pct(s['mean'])}{ci}"
              + (f"  ({vals})" if vals else ""))
    for c in st.get("comparisons") or [st["compare"]]:
        print(f"  {c['b'] + 1} vs {c['a'] + 1}: {c['verdict_text']}")
    _emit(st, args.json)
    return 0


def cmd_close(args) -> int:
    check_teacher(args.password)
    from xray_core.runs import classes
    exp = classes.close(args.id)
    print(f"closed class experiment {exp['id']} (its runs and status stay)")
    return 0


def cmd_list(args) -> int:
    from xray_core.runs import classes
    rows = classes.list_experiments(open_only=args.open)
    if args.json == "-":
        _emit(rows, "-")
        return 0
    for r in rows:
        print(f"{r['id']}  {r['state']:<6}  {r['title']}")
    if not rows:
        print("no class experiments" + (" open" if args.open else ""))
    _emit(rows, args.json)
    return 0


# ---- train --class-experiment ----------------------------------------------------

@dataclass
class ClassTurn:
    """What `train --class-experiment` trains: the assigned setup's config (with its seed),
    what service.start is given (the experiment as the run's group) and what the JSON adds."""
    config: object
    start_kw: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)


def class_turn(args) -> ClassTurn:
    """The next setup the class experiment assigns to `args.workspace` (cli/main.py's train).
    Knob flags are refused: the experiment decides the setup, so every run compares."""
    given = [n for n in _knob_names(args) if getattr(args, n, None) is not None]
    if getattr(args, "preset", None):
        given.insert(0, "preset")
    if given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise ConfigError(f"--class-experiment trains the setup the experiment assigns: drop {flags}")
    from xray_core.runs import classes
    from xray_core.runs.store import check_workspace
    turn = classes.assign(args.class_experiment, check_workspace(args.workspace))
    if getattr(args, "data", None) not in (None, "phantom", turn.config.data):
        raise ConfigError(f"--data: this class experiment trains on {turn.config.data!r}, set when it was opened")
    return ClassTurn(turn.config, {"group_id": turn.experiment_id, "label": turn.label},
                     {"preset": turn.preset,
                      "class_experiment": {k: v for k, v in turn.to_json().items() if k != "config"}})


def add_commands(subparsers) -> None:
    """Register `class` and its sub-commands on the CLI's sub-parsers."""
    c = subparsers.add_parser("class", help="the class as one experiment: open, status, close, list")
    sub = c.add_subparsers(dest="class_command", required=True, parser_class=type(c))

    o = sub.add_parser("open", help="open a class experiment: students are assigned its setups in turn")
    o.add_argument("--setups", required=True, help="two or more presets, e.g. p1-task1,p1-task2")
    o.add_argument("--title", help="what the class is testing (default: the setups)")
    _add_knobs(o, train=True)      # knobs given here are set on every setup (e.g. --epochs 3 for a lecture)
    o.add_argument("--data", help="phantom (default), a folder or a .zip: what every run trains on")
    o.add_argument("--password", help="the teacher's password (XRAY_LAB_TEACHER_PASSWORD); '-' reads it from stdin")
    o.add_argument("--json", nargs="?", const="-", metavar="OUT|-", help="print JSON (or write it to OUT)")
    o.set_defaults(func=cmd_open)

    s = sub.add_parser("status", help="each setup's runs, mean ± 95 % CI, and the verdict")
    s.add_argument("id")
    s.add_argument("--json", nargs="?", const="-", metavar="OUT|-")
    s.set_defaults(func=cmd_status)

    cl = sub.add_parser("close", help="no more turns (runs and status stay)")
    cl.add_argument("id")
    cl.add_argument("--password", help="the teacher's password; '-' reads it from stdin")
    cl.set_defaults(func=cmd_close)

    ls = sub.add_parser("list", help="class experiments, newest first")
    ls.add_argument("--open", action="store_true", help="only open ones")
    ls.add_argument("--json", nargs="?", const="-", metavar="OUT|-")
    ls.set_defaults(func=cmd_list)
