"""The class as one experiment (issue 25, item 2): the teacher opens an experiment with two
or more setups (e.g. p1-task1 vs p1-task2); each student who joins is assigned the next
setup in turn, with a seed of its own; their runs train as usual and carry the
experiment's id as their group_id; `status` gives each setup's test accuracies, mean ±
95 % interval, and the verdict of `stats.compare` (setup 2 against setup 1).

    cid = classes.open(["p1-task1", "p1-task2"], "Does LeakyReLU help?")
    a = classes.assign(cid, "student-ws")      # a.config (seed set), a.preset, a.label
    service.start(a.config, workspace="student-ws", group_id=cid, ...)
    classes.status(cid)                         # {"setups": [...], "compare": {...}, ...}
    classes.close(cid)

Kept in the run store (tables `class_experiments` and `class_assignments`, runs/store.py),
so every replica on one database sees the same experiment and hands out turns in one
sequence. A setup is a preset name, a RunConfig, or a dict of knobs (optionally with
"preset": the knobs then change that preset). Turns go round-robin by how many turns each
setup has had (the fewest first, the first setup on a tie); the turn's seed is its number
(0, 1, 2, …), so no two runs of an experiment share a seed. A run is counted for the
setup its seed was assigned to.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from xray_core import stats
from xray_core.config import RunConfig
from xray_core.errors import ConfigError, StoreError
from xray_core.presets import PRESETS, _changes, _short, describe, get_preset, matching_preset
from xray_core.runs.store import RunStore, get_store

MAX_SETUPS = 6


@dataclass
class Assignment:
    experiment_id: str
    number: int              # the turn: 0, 1, 2, … across the experiment
    setup: int               # index into the experiment's setups
    seed: int
    preset: str | None       # the setup's preset (as the teacher named it)
    label: str
    config: RunConfig        # the setup's config with this turn's seed

    def to_json(self) -> dict:
        return {"experiment_id": self.experiment_id, "number": self.number, "setup": self.setup,
                "seed": self.seed, "preset": self.preset, "label": self.label,
                "config": self.config.to_dict()}


def _store(store: RunStore | None) -> RunStore:
    return store if store is not None else get_store()


def make_setup(setup: Any, overrides: dict | None = None) -> dict:
    """One setup as kept in the store: {"preset", "label", "config"} (config resolved and
    validated, caps included: every student will train it)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    preset: str | None = None
    if isinstance(setup, str):
        preset = setup.strip()
        config = get_preset(preset).config
    elif isinstance(setup, RunConfig):
        config = setup
    elif isinstance(setup, dict):
        knobs = dict(setup)
        preset = knobs.pop("preset", None)
        config = get_preset(preset).config if preset else RunConfig()
        try:
            config = config.replace(**knobs)
        except TypeError:
            unknown = sorted(set(knobs) - set(RunConfig.__dataclass_fields__))
            raise ConfigError(f"unknown knob(s) in a setup: {', '.join(unknown)}") from None
    else:
        raise ConfigError(f"a setup is a preset name, a config or a dict of knobs, got {type(setup).__name__}")
    try:
        config = config.replace(**overrides)
    except TypeError:
        unknown = sorted(set(overrides) - set(RunConfig.__dataclass_fields__))
        raise ConfigError(f"unknown knob(s): {', '.join(unknown)}") from None
    config = config.validate().resolved()
    if preset is None:
        p = matching_preset(config)
        preset = p.name if p else None
    label = preset if preset and not _edited(preset, config) else describe(config)
    return {"preset": preset, "label": label, "config": config.to_dict()}


def _edited(preset: str, config: RunConfig) -> bool:
    p = PRESETS.get(preset)
    return p is None or matching_preset(config) is not p


def _key(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "seed"}


def open(setups: Sequence[Any], title: str = "", *, overrides: dict | None = None,  # noqa: A001
         store: RunStore | None = None) -> str:
    """Open a class experiment; returns its id. `overrides`: knobs set on every setup
    (e.g. epochs=3 for a short lecture run)."""
    if isinstance(setups, (str, bytes)) or not isinstance(setups, Iterable):
        raise ConfigError("setups must be a list of presets or configs")
    made = [make_setup(s, overrides) for s in setups]
    if not 2 <= len(made) <= MAX_SETUPS:
        raise ConfigError(f"a class experiment compares 2 to {MAX_SETUPS} setups, got {len(made)}")
    for i, a in enumerate(made):
        for j in range(i):
            if _key(made[j]["config"]) == _key(a["config"]):
                raise ConfigError(f"setups {j + 1} and {i + 1} are the same ({a['label']}): "
                                  "a class experiment compares different setups")
    title = str(title or "").strip() or " vs ".join(s["label"] for s in made)
    return _store(store).create_class_experiment(title, made)


def get(experiment_id: str, *, store: RunStore | None = None) -> dict:
    exp = _store(store).get_class_experiment(experiment_id)
    if exp is None:
        raise StoreError(f"no class experiment {str(experiment_id)[:40]!r} "
                         "(see `python -m xray_core class list`)")
    return exp


def assign(experiment_id: str, workspace: str, *, store: RunStore | None = None) -> Assignment:
    """The next setup in turn for this student, with its own seed (refused when closed)."""
    s = _store(store)
    exp = get(experiment_id, store=s)
    turn = s.assign_class_setup(experiment_id, workspace, _fewest)
    setup = exp["setups"][turn["setup"]]
    config = RunConfig.from_dict(setup["config"]).replace(seed=turn["seed"]).validate(caps=False).resolved()
    return Assignment(experiment_id, turn["number"], turn["setup"], turn["seed"], setup.get("preset"),
                      setup.get("label") or "", config)


def _fewest(counts: list[int]) -> int:
    """Round-robin: the setup with the fewest turns so far (the first on a tie)."""
    return min(range(len(counts)), key=lambda i: (counts[i], i))


def close(experiment_id: str, *, store: RunStore | None = None) -> dict:
    """No more turns; its runs and status stay. Closing a closed one is refused in one line."""
    s = _store(store)
    exp = get(experiment_id, store=s)
    if not s.close_class_experiment(experiment_id):
        raise StoreError(f"class experiment {experiment_id} is already {exp['state']}")
    return get(experiment_id, store=s)


def list_experiments(*, open_only: bool = False, store: RunStore | None = None) -> list[dict]:
    rows = _store(store).list_class_experiments(states=["open"] if open_only else None)
    return [{"id": r["id"], "title": r["title"], "state": r["state"], "created_at": r["created_at"],
             "setups": [s["label"] for s in r["setups"]]} for r in rows]


def _accuracy(result: dict | None) -> float | None:
    acc = ((result or {}).get("test") or {}).get("accuracy")
    return float(acc) if isinstance(acc, (int, float)) else None


def status(experiment_id: str, *, store: RunStore | None = None) -> dict:
    """Per setup: preset, label, assigned turns, runs (by state), and over its finished runs'
    test accuracy: n, values, mean, sd, ci95; then `compare` (setup 2 − setup 1: difference,
    p_value, verdict, seeds_needed, more runs needed per setup), and with more than two
    setups `comparisons` (each against setup 1)."""
    s = _store(store)
    exp = get(experiment_id, store=s)
    setups = exp["setups"]
    turns = s.list_class_assignments(experiment_id)
    setup_of_seed = {t["seed"]: t["setup"] for t in turns}
    assigned = [0] * len(setups)
    for t in turns:
        if 0 <= t["setup"] < len(setups):
            assigned[t["setup"]] += 1
    values: list[list[float]] = [[] for _ in setups]
    states: list[dict[str, int]] = [{} for _ in setups]
    runs: list[list[dict]] = [[] for _ in setups]
    for r in s.class_runs(experiment_id):
        k = setup_of_seed.get((r["config"] or {}).get("seed"))
        if k is None or not 0 <= k < len(setups):
            continue            # not a turn of this experiment (cannot be placed in a setup)
        states[k][r["state"]] = states[k].get(r["state"], 0) + 1
        acc = _accuracy(r["result"])
        runs[k].append({"id": r["id"], "workspace": r["workspace"], "state": r["state"],
                        "seed": r["config"].get("seed"), "epochs_done": r["epochs_done"],
                        "epochs": r["epochs"], "test_accuracy": acc})
        if r["state"] == "finished" and acc is not None:
            values[k].append(acc)
    out_setups = []
    for k, setup in enumerate(setups):
        summ = stats.summarize(values[k])
        out_setups.append({"setup": k, "preset": setup.get("preset"), "label": setup.get("label"),
                           "config": setup["config"], "assigned": assigned[k], "states": states[k],
                           "n": summ["n"], "values": summ["values"], "mean": summ["mean"], "sd": summ["sd"],
                           "ci95": summ["ci95"], "runs": runs[k]})
    comparisons = [_compare(out_setups[0], b) for b in out_setups[1:]]
    out = {"id": exp["id"], "title": exp["title"], "state": exp["state"], "created_at": exp["created_at"],
           "closed_at": exp["closed_at"], "assigned": len(turns), "setups": out_setups,
           "compare": comparisons[0]}
    if len(comparisons) > 1:
        out["comparisons"] = comparisons
    return out


def _compare(a: dict, b: dict) -> dict:
    """Setup b against setup a (stats.compare). Below 2 finished runs per setup there is no test
    yet: verdict "no evidence" and how many runs each setup still needs before there is one."""
    base = {"a": a["setup"], "b": b["setup"], "a_label": a["label"], "b_label": b["label"]}
    if a["n"] < 2 or b["n"] < 2:
        diff = b["mean"] - a["mean"] if a["n"] and b["n"] else None
        need = [max(0, 2 - a["n"]), max(0, 2 - b["n"])]
        return {**base, "difference": diff, "ci95": None, "p_value": None, "test": None,
                "verdict": "no evidence", "seeds_needed": None, "more_runs_needed": need,
                "verdict_text": f"not enough runs yet: each setup needs at least 2 finished runs "
                                f"({a['n']} and {b['n']} so far)"}
    c = stats.compare(a["values"], b["values"])
    need = c["seeds_needed"]
    more = None if need is None else [max(0, need - a["n"]), max(0, need - b["n"])]
    return {**base, "difference": c["difference"], "ci95": c["ci95"], "p_value": c["p_value"], "test": c["test"],
            "verdict": c["verdict"], "seeds_needed": need, "more_runs_needed": more,
            "verdict_text": c["verdict_text"]}


def current(*, store: RunStore | None = None) -> dict | None:
    """The newest open class experiment (what students join, the projector shows), or None."""
    rows = _store(store).list_class_experiments(states=["open"], limit=1)
    return rows[0] if rows else None


def curves(experiment_id: str, *, store: RunStore | None = None) -> dict:
    """The race: each setup's runs' validation accuracy per epoch, and the setup's mean per
    epoch (over the runs that reached it)."""
    s = _store(store)
    exp = get(experiment_id, store=s)
    setup_of_seed = {t["seed"]: t["setup"] for t in s.list_class_assignments(experiment_id)}
    out = [{"setup": k, "label": st.get("label") or "", "runs": [], "mean": []}
           for k, st in enumerate(exp["setups"])]
    for r in s.class_curves(experiment_id):
        k = setup_of_seed.get((r["config"] or {}).get("seed"))
        if k is None or not 0 <= k < len(out):
            continue
        val = [float(v) for v in ((r["history"] or {}).get("val_accuracy") or []) if v is not None]
        if val:
            out[k]["runs"].append({"id": r["id"], "state": r["state"], "val_accuracy": val})
    for setup in out:
        longest = max((len(r["val_accuracy"]) for r in setup["runs"]), default=0)
        for e in range(longest):
            at = [r["val_accuracy"][e] for r in setup["runs"] if len(r["val_accuracy"]) > e]
            setup["mean"].append(sum(at) / len(at))
    return {"id": exp["id"], "title": exp["title"], "state": exp["state"], "setups": out}


# ---- "Send to class" (issue 25, item 1) ---------------------------------------------------

MESSAGE_CHARS = 200


def short_knobs(preset: str | None, config: RunConfig) -> str:
    """What a setup changes from its preset, short: "LeakyReLU α 0.01, 5 epochs" ("" if nothing)."""
    p = PRESETS.get(preset or "")
    if p is None:
        return describe(config)
    r = config.resolved()
    changed = _changes(p, config)
    parts = []
    for n in changed:
        text = _short(n, getattr(r, n))
        if n == "activation" and r.activation == "leaky_relu" and "alpha" not in changed:
            text += " " + _short("alpha", r.alpha)     # a LeakyReLU is read with its slope
        if n == "alpha" and "activation" in changed and parts:
            parts[-1] += " " + text                     # "LeakyReLU α 0.1", not "LeakyReLU, α 0.1"
            continue
        parts.append(text)
    return ", ".join(parts)


def send(preset: str | None = None, knobs: dict | None = None, message: str = "", *,
         store: RunStore | None = None) -> dict:
    """The teacher's "Send to class": a setup (a preset, + knobs) every Train page offers in a
    banner, and/or a pinned one-line message every page shows. Replaces the previous send;
    nothing at all clears it. Returns what pages will show (see `pinned`)."""
    message = " ".join(str(message or "").split())
    if len(message) > MESSAGE_CHARS:
        raise ConfigError(f"the message is {len(message)} characters: keep it to one line of {MESSAGE_CHARS}")
    setup = None
    if preset or knobs:
        setup = make_setup({**({"preset": preset} if preset else {}), **(knobs or {})})
        config = RunConfig.from_dict(setup["config"])
        setup["knobs"] = short_knobs(setup["preset"] if preset else None, config)
        setup["label"] = preset or setup["label"]
    _store(store).pin_to_class(setup, message)
    return pinned(store=store)


def pinned(*, store: RunStore | None = None) -> dict | None:
    """{"id", "setup" (preset, label, config, knobs) or None, "message" or None, "created_at"};
    None when nothing is pinned."""
    row = _store(store).class_pin()
    if row is None:
        return None
    return {"id": row["id"], "setup": row["setup"], "message": row["message"], "created_at": row["created_at"]}


def try_this(setup: dict) -> str:
    """The banner's words: "p1-task2 — LeakyReLU α 0.01"."""
    knobs = setup.get("knobs") or ""
    return f"{setup.get('label') or setup.get('preset') or 'this setup'}" + (f" — {knobs}" if knobs else "")
