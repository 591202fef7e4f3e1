"""What every CLI command shares: one-line failures, the knob flags, JSON output."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from xray_core.config import CAPS, KNOBS, RunConfig, parse_filters
from xray_core.errors import ConfigError, XrayLabError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage + message; we promise one line
        raise SystemExit(_fail(f"{self.prog}: {message}", code=2))


def _fail(message: str, code: int = 1) -> int:
    print(f"error: {message}".splitlines()[0], file=sys.stderr)
    return code


def _filters_arg(text: str):
    try:
        return parse_filters(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_knobs(p: argparse.ArgumentParser, train: bool = False) -> None:
    """The knob table (config.KNOBS) as flags; None = not given, so a preset's value stands."""
    g = p.add_argument_group("model and training knobs (override --preset)")
    g.add_argument("--preset", help="one of the course experiments, e.g. p1-task1 (see `presets`)")
    for name, k in KNOBS.items():
        if not k.flag or not (k.summary or train):
            continue
        flag = "--" + name.replace("_", "-")
        label = k.label.split(" (")[0]
        if k.choices:
            g.add_argument(flag, choices=k.choices, help=label)
        elif k.kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=label)
        elif k.kind is tuple:
            g.add_argument(flag, type=_filters_arg, help="five CNN filter counts, e.g. 64,128,128,256,256")
        else:
            lo, hi = k.min, k.max
            rng = f"{lo:,} to {hi:,}" if k.kind is int and hi is not None else f"{lo:g} to {hi:g}" if hi else ""
            if k.cap:
                rng = f"{lo:,} to this server's limit, {CAPS[k.cap].env} (default {CAPS[k.cap].default:,})"
            g.add_argument(flag, type=k.kind, help=f"{label} ({rng})")


def _knob_names(args: argparse.Namespace) -> tuple[str, ...]:
    return tuple(n for n, k in KNOBS.items() if k.flag and hasattr(args, n))


def config_from_args(args: argparse.Namespace) -> RunConfig:
    from xray_core.presets import get_preset
    base = get_preset(args.preset).config if getattr(args, "preset", None) else RunConfig()
    changes = {k: getattr(args, k) for k in _knob_names(args) if getattr(args, k) is not None}
    if getattr(args, "data", None):
        changes["data"] = args.data
    return base.replace(**changes).validate()


def _write_json(path: str | None, obj) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=2, allow_nan=False, default=_json_default))


def _json_default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _check_data(source: str) -> None:
    if source != "phantom" and not Path(source).exists():
        raise XrayLabError(f"{source}: no such file or folder (use 'phantom', a folder or a .zip)")
