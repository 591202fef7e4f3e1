"""Experiments over several runs: repeat one setup with N seeds, sweep one knob, and the
course's seven presets as a study — on top of the ordinary engine.

Every run is an ordinary TrainingJob (seeds S … S+N−1), started at once and queued
on the process-wide scheduler like any student's run, so a group never takes more
trainers than its share. A `Group` is non-blocking (the page polls `records()`);
`repeat`, `sweep` and `course_study` wait for it and return records + statistics.

When a run store is given (issue 8's interface, see the lead's STORE_API.md), the group
is created with `store.create_group(workspace, kind, spec)` and each run is recorded
with `recorder.record_job(store, job, workspace, preset=…, label=…, group_id=…)`, so a
group survives a refresh or restart like any run. `store=None` keeps everything in memory.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from xray_core import stats
from xray_core.config import KNOBS, RunConfig, sweeps
from xray_core.data.dataset import Dataset
from xray_core.errors import ConfigError
from xray_core.presets import COURSE_PRESETS, PRESETS, get_preset, matching_preset
from xray_core.runs import service
from xray_core.train.job import DONE, TrainingJob

MAX_SEEDS = 50          # per group: a classroom server is shared
MAX_RUNS = 200          # per experiment (values × seeds, presets × seeds)

# Knobs a sweep can vary: the knob table's rows with a `sweep` (config.KNOBS), each with how a
# typed value is read and its label. "filter_scale" (the filters' row) multiplies the config's
# five CNN filter counts; "limit_train" is the training-set size.
SWEEPS = {name: s for name, (_knob, s) in sweeps().items()}
SWEEP_KNOBS: dict[str, Callable[[str], Any]] = {name: s.kind for name, s in SWEEPS.items()}
KNOB_LABELS = {name: s.label for name, s in SWEEPS.items()}


def check_seeds(n: int, seed: int = 0) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SEEDS:
        raise ConfigError(f"seeds must be a whole number from 1 to {MAX_SEEDS}, got {n}")
    RunConfig(seed=seed).validate()
    RunConfig(seed=seed + n - 1).validate()


def with_knob(config: RunConfig, knob: str, value: Any) -> RunConfig:
    """The config with one sweep knob set (validated)."""
    if knob not in SWEEP_KNOBS:
        raise ConfigError(f"unknown sweep knob {knob!r}: choose one of {', '.join(SWEEP_KNOBS)}")
    if knob == "filter_scale":
        s, k = SWEEPS[knob], KNOBS["filters"]
        if not isinstance(value, (int, float)) or not s.min < value <= s.max:
            raise ConfigError(f"{s.label} must be a number in ({s.min:g}, {s.max:g}], got {value}")
        return config.replace(filters=tuple(max(k.min, min(k.max, round(f * value))) for f in config.filters)).validate()
    return config.replace(**{knob: value}).validate()


def parse_values(knob: str, text: str) -> list:
    """'0.001,0.01,0.1' -> typed values for the knob (ConfigError on anything else)."""
    if knob not in SWEEP_KNOBS:
        raise ConfigError(f"unknown sweep knob {knob!r}: choose one of {', '.join(SWEEP_KNOBS)}")
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise ConfigError("give the sweep at least one value, e.g. --values 16,32,64")
    out = []
    for p in parts:
        try:
            out.append(SWEEP_KNOBS[knob](p))
        except ValueError:
            kind = "whole numbers" if SWEEP_KNOBS[knob] is int else "numbers"
            raise ConfigError(f"{knob} values must be {kind}, got {p!r}") from None
    if len(set(out)) != len(out):
        raise ConfigError(f"sweep values repeat: {text}")
    return out


# ---- one run's record -------------------------------------------------------------

def run_record(job: TrainingJob, key: Any = None, run_id: str | None = None) -> dict:
    """What a group keeps of a run: small enough for a JSON file and the page."""
    snap = job.snapshot()
    res = snap.result or {}
    test = res.get("test") or {}
    return {"key": key, "seed": job.config.seed, "state": snap.state, "error": snap.error,
            "run_id": run_id, "job_id": job.id,
            "epochs_done": snap.epoch, "epochs": snap.epochs,
            "test_accuracy": test.get("accuracy"), "test_loss": test.get("loss"),
            "train_accuracy": res.get("train_accuracy"), "val_accuracy": res.get("val_accuracy"),
            "fit_seconds": (res.get("timing") or {}).get("fit_seconds"),
            "history": {k: [v if math.isfinite(v) else None for v in vals]  # JSON has no NaN (diverged runs)
                        for k, vals in snap.history.items()},
            "config": job.config.to_dict()}


def metric_stats(records: Sequence[dict]) -> dict:
    """Summaries of the finished runs' test accuracy/loss, train accuracy and the train−test gap."""
    done = [r for r in records if r["state"] == DONE and r["test_accuracy"] is not None]
    out = {m: stats.summarize([r[m] for r in done if r[m] is not None])
           for m in ("test_accuracy", "test_loss", "train_accuracy")}
    out["gap"] = stats.summarize([r["train_accuracy"] - r["test_accuracy"] for r in done
                                  if r["train_accuracy"] is not None])
    return out


# ---- a group of jobs --------------------------------------------------------------

@dataclass
class Member:
    key: Any                 # the sweep value or preset name this run belongs to (None for a repeat)
    job: TrainingJob
    run_id: str | None = None


@dataclass
class Group:
    """Runs started together; non-blocking. `keys` lists the sub-groups in order."""
    kind: str                            # repeat | sweep | study
    spec: dict
    members: list[Member] = field(default_factory=list)
    keys: list = field(default_factory=list)
    group_id: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return all(m.job.snapshot().finished for m in self.members)

    def progress(self) -> tuple[int, int]:
        """(runs finished, runs in the group)."""
        return sum(m.job.snapshot().finished for m in self.members), len(self.members)

    def stop(self) -> None:
        for m in self.members:
            m.job.stop()

    def wait(self, timeout: float | None = None, on_finish: Callable[[dict], None] | None = None) -> "Group":
        """Block until every run has finished; `on_finish(record)` once per run as it ends."""
        end = None if timeout is None else time.monotonic() + timeout
        told: set[str] = set()
        while True:
            for m in self.members:
                if m.job.id not in told and m.job.snapshot().finished:
                    told.add(m.job.id)
                    if on_finish:
                        on_finish(run_record(m.job, m.key, m.run_id))
            if len(told) == len(self.members) or (end is not None and time.monotonic() > end):
                return self
            time.sleep(0.2)

    def drop_models(self) -> None:
        """Free the finished runs' weights: a group keeps records and curves, not N models."""
        for m in self.members:
            if m.job.snapshot().finished:
                m.job.model = None

    def records(self, key: Any = ...) -> list[dict]:
        return [run_record(m.job, m.key, m.run_id) for m in self.members if key is ... or m.key == key]

    def result(self) -> dict:
        """Records and statistics, by kind (see repeat / sweep / course_study)."""
        if self.kind == "repeat":
            recs = self.records()
            return {"kind": "repeat", "group_id": self.group_id, **self.spec, "runs": recs, **metric_stats(recs)}
        points = []
        for k in self.keys:
            recs = self.records(k)
            point = {("value" if self.kind == "sweep" else "preset"): k, "runs": recs, **metric_stats(recs)}
            if self.kind == "study":
                point["reported"] = PRESETS[k].reported
                point["title"] = PRESETS[k].title
            points.append(point)
        out = {"kind": self.kind, "group_id": self.group_id, **self.spec, "points": points}
        if self.kind == "study":
            out["steps"] = study_steps(points)
        return out


def study_steps(points: list[dict]) -> list[dict]:
    """Each preset against the previous one in the course (test accuracy), where both have ≥ 2 runs."""
    steps = []
    for prev, cur in zip(points, points[1:]):
        a, b = prev["test_accuracy"]["values"], cur["test_accuracy"]["values"]
        step = {"from": prev["preset"], "to": cur["preset"]}
        rep_a, rep_b = prev["reported"].get("test_accuracy"), cur["reported"].get("test_accuracy")
        step["reported_difference"] = (rep_b - rep_a) / 100 if rep_a is not None and rep_b is not None else None
        if len(a) >= 2 and len(b) >= 2:
            c = stats.compare(a, b)
            step.update({k: c[k] for k in ("difference", "ci95", "p_value", "test", "verdict", "verdict_text",
                                           "seeds_needed")})
        else:
            step.update(difference=None, verdict=None, verdict_text="needs at least 2 finished runs per preset")
        steps.append(step)
    return steps


def _load(config: RunConfig, dataset: Dataset | None) -> Dataset:
    if dataset is not None:
        return dataset
    from xray_core.data.for_run import load_for_run
    # once for the whole group: every run sees the same data (patches, or films for a U-Net)
    return load_for_run(config.data, config.arch)


def _label(config: RunConfig, preset: str | None, seed: int) -> str:
    p = matching_preset(config)
    name = preset or (p.name if p else f"{config.arch}/{config.activation}")
    return f"{name}, seed {seed}"


def _launch(kind: str, spec: dict, plan: list[tuple[Any, RunConfig]], dataset: Dataset, *, isolated: bool,
            store, workspace: str, client: str | None = None) -> Group:
    if len(plan) > MAX_RUNS:
        raise ConfigError(f"{len(plan)} runs is too many for one experiment (at most {MAX_RUNS})")
    # every run is owned by its workspace (and client): the class queue takes a few of them
    # at a time (scheduler.py), the rest wait in the workspace's own line
    service.check_room(workspace, len(plan))
    group = Group(kind, spec, keys=list(dict.fromkeys(k for k, _ in plan)))
    if store is not None:
        group.group_id = store.create_group(workspace, kind, spec)
    backend = service.default_backend(isolated)
    for key, cfg in plan:
        p = matching_preset(cfg)
        run = service.start(cfg, workspace=workspace, dataset=dataset, backend=backend, store=store,
                            preset=p.name if p else None,
                            label=_label(cfg, key if kind == "study" else None, cfg.seed),
                            group_id=group.group_id, client=client, begin=False)
        group.members.append(Member(key, run.job, run.run_id))
    for m in group.members:  # all queued at once, in order: the scheduler runs them as trainers free up
        m.job.start()
    return group


def _seed_list(seeds: int, seed: int) -> list[int]:
    check_seeds(seeds, seed)
    return list(range(seed, seed + seeds))


def start_repeat(config: RunConfig, seeds: int, seed: int | None = None, *, dataset: Dataset | None = None,
                 isolated: bool = False, store=None, workspace: str = "cli", client: str | None = None) -> Group:
    """N runs of one config with seeds S … S+N−1 (S = the config's own seed by default)."""
    config = config.validate()
    s = config.seed if seed is None else seed
    cfg = config.replace(seed=s).validate()
    seed_list = _seed_list(seeds, s)
    p = matching_preset(cfg)
    spec = {"config": cfg.resolved().to_dict(), "preset": p.name if p else None,
            "reported": p.reported if p else None, "seeds": seed_list}
    plan = [(None, cfg.replace(seed=k)) for k in seed_list]
    return _launch("repeat", spec, plan, _load(cfg, dataset), isolated=isolated, store=store, workspace=workspace,
                   client=client)


def start_sweep(config: RunConfig, knob: str, values: Sequence, seeds: int, seed: int | None = None, *,
                dataset: Dataset | None = None, isolated: bool = False, store=None,
                workspace: str = "cli", client: str | None = None) -> Group:
    """values × seeds runs: the config with `knob` set to each value, each with seeds S … S+N−1."""
    config = config.validate()
    s = config.seed if seed is None else seed
    seed_list = _seed_list(seeds, s)
    if not values:
        raise ConfigError("give the sweep at least one value")
    plan = [(v, with_knob(config, knob, v).replace(seed=k)) for v in values for k in seed_list]
    spec = {"config": config.replace(seed=s).resolved().to_dict(), "knob": knob, "values": list(values),
            "seeds": seed_list}
    return _launch("sweep", spec, plan, _load(config, dataset), isolated=isolated, store=store,
                   workspace=workspace, client=client)


def start_study(seeds: int, seed: int = 0, *, data: str = "phantom", presets: Sequence[str] | None = None,
                limit_train: int | None = None, epochs: int | None = None, dataset: Dataset | None = None,
                isolated: bool = False, store=None, workspace: str = "cli", client: str | None = None) -> Group:
    """The course as a study: each preset (default: all seven) × N seeds, in course order.
    `limit_train` / `epochs` shrink every run (quick classroom versions; the CNN presets
    take ~20 min per run on the full real data)."""
    names = list(presets or COURSE_PRESETS)
    for n in names:
        get_preset(n)
    seed_list = _seed_list(seeds, seed)
    changes: dict[str, Any] = {"data": data}
    if limit_train is not None:
        changes["limit_train"] = limit_train
    if epochs is not None:
        changes["epochs"] = epochs
    plan = [(n, PRESETS[n].config.replace(seed=k, **changes).validate()) for n in names for k in seed_list]
    spec = {"presets": names, "seeds": seed_list, "data": data, "limit_train": limit_train, "epochs": epochs}
    return _launch("study", spec, plan, _load(plan[0][1], dataset), isolated=isolated, store=store,
                   workspace=workspace, client=client)


def repeat(config: RunConfig, seeds: int, seed: int | None = None, **kw) -> dict:
    """Blocking repeat: {"kind", "config", "preset", "reported", "seeds", "runs", "test_accuracy",
    "test_loss", "train_accuracy", "gap"} (each metric: values, n, mean, sd, sem, ci95)."""
    on_finish = kw.pop("on_finish", None)
    return start_repeat(config, seeds, seed, **kw).wait(on_finish=on_finish).result()


def sweep(config: RunConfig, knob: str, values: Sequence, seeds: int, seed: int | None = None, **kw) -> dict:
    """Blocking sweep: {"kind", "knob", "values", "seeds", "points": [{"value", "runs", metrics…}]}."""
    on_finish = kw.pop("on_finish", None)
    return start_sweep(config, knob, values, seeds, seed, **kw).wait(on_finish=on_finish).result()


def course_study(seeds: int, seed: int = 0, **kw) -> dict:
    """Blocking study: {"kind", "presets", "points": [{"preset", "reported", "runs", metrics…}],
    "steps": [each preset vs the previous: difference, ci95, p_value, test, verdict]}."""
    on_finish = kw.pop("on_finish", None)
    return start_study(seeds, seed, **kw).wait(on_finish=on_finish).result()
