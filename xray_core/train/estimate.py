"""How long a run will take on *this* machine, before it starts and while it runs.

Why not constants: issue 10 found fixed seconds-per-multiply-add 3x too low on a
laptop, and blind to validation, the probe, the test evaluation and start-up. So:

1. **measured** — `calibrate(config)` builds the chosen model once and times, on
   synthetic patches: a first `fit` of K steps (its excess over the second is the
   trace/start-up cost), a second `fit` of K steps (seconds per training step,
   including Keras' per-step overhead), a validation-sized `evaluate` and a
   `predict` (seconds per patch of a forward pass). The result is cached per
   *cost key* — only what changes the per-step cost: arch, cnn_mode, filters,
   padding, batch_norm, activation, batch_size, optimizer — in memory and in
   `$XRAY_LAB_HOME/calibration.json` under a *machine signature* (CPU model,
   cores, TensorFlow version), so a calibration never travels to another machine.
2. **learned** — `learn(config, sizes, timing)` records how a finished run compared
   with its measured estimate (actual/estimated, for the fit and the whole run);
   later estimates for the same key are the measured ones times that ratio
   (a running mean), because a real run also pays for data shipping, callbacks
   and whatever else this machine is doing.
3. **rough** — `models.estimate_seconds` (multiply-add arithmetic), when nothing
   has been measured yet and measuring is not allowed (e.g. the page's script thread).
   A U-Net (arch segment) is never calibrated: rough (`segment_rough`), then learned from
   this machine's finished U-Net runs like 2.

`estimate(config, n_train, n_val, n_test)` returns
`{"total", "fit", "startup", "per_epoch", "evaluation", "source"}` in seconds, where
fit = first-step trace + epochs x (train + validation + probe) (what the job's
timing.fit_seconds measures), startup = hand-off + model build + trace (the wait for
the first point), total = hand-off + build + fit + test evaluation.

For the page: `cached_estimate()` never builds a model (a dict lookup), and
`measure_in_background(config)` calibrates in a daemon thread; `page_estimate()`
does both in one call.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from xray_core.config import RunConfig, step_cost_parts
from xray_core import settings

_log = logging.getLogger(__name__)
_failed: dict[str, str] = {}   # cost key -> why its calibration failed (this process does not retry it)

VERSION = 4                 # bump when the measured fields change meaning
PROBE_SIZE = 256            # = training.PROBE_SIZE (not imported: training imports Keras-side code)
VAL_BATCH, TEST_BATCH = 512, 1024   # the batch sizes training.py validates and tests with
# Fixed start-up costs not seen by the calibration: handing the job to its thread or
# worker, building the tf.data pipeline and the probe model. Measured on this
# machine as the gap between a job's start and its first step, minus the trace.
HANDOFF_SECONDS = 0.3
_LEARN_WEIGHT = 0.5         # running mean: new ratio counts half

_lock = threading.Lock()            # guards _memory and the file
_measuring: dict[str, threading.Thread] = {}
_measure_lock = threading.Lock()    # one calibration at a time: they compete for the same cores
_memory: dict[str, dict] = {}


# ---- keys ------------------------------------------------------------------------

def cost_key(config: RunConfig) -> str:
    """What changes the per-step cost, nothing else (not lr, seed, epochs, data...): the
    knobs flagged step_cost in the knob table (config.KNOBS) that this config uses."""
    return "/".join(step_cost_parts(config.resolved()))


def machine_signature() -> str:
    """CPU model, core count and TensorFlow version: a calibration holds only for these."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version
        tf = version("tensorflow")
    except (ImportError, PackageNotFoundError):
        tf = "?"
    return f"{cpu} | {os.cpu_count()} cpu | tf {tf}"


def _path() -> Path:
    return settings.home() / "calibration.json"


def _load_file() -> dict:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return {}
    return data


def _save_entry(key: str, entry: dict) -> None:
    """Merge one key's entry into the file (atomic replace: readers never see half a file)."""
    path = _path()
    data = _load_file() or {"version": VERSION, "machines": {}}
    data.setdefault("machines", {}).setdefault(machine_signature(), {})[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs a re-measurement next time


def _entry(key: str) -> dict | None:
    mem_key = f"{_path()}|{key}"    # a test (or user) switching XRAY_LAB_HOME gets its own cache
    with _lock:
        if mem_key in _memory:
            return _memory[mem_key]
        entry = _load_file().get("machines", {}).get(machine_signature(), {}).get(key)
        if entry is not None:
            _memory[mem_key] = entry
        return entry


def _put(key: str, entry: dict) -> None:
    with _lock:
        _memory[f"{_path()}|{key}"] = entry
        _save_entry(key, entry)


def forget_memory() -> None:
    """Drop the in-memory cache (the file stays): what a fresh process sees."""
    with _lock:
        _memory.clear()


# ---- measuring -------------------------------------------------------------------

def _steps_to_time(config: RunConfig) -> int:
    """Enough steps to average out jitter, few enough to stay ~1-3 s even for the CNN.
    Up to 100: 30 FC steps were 0.1 s of training, and one slow tenth of a second made
    p1-task5's estimate 35 % long (58 s for a 43 s run)."""
    from xray_core.models import multiply_adds
    work = multiply_adds(config) * config.batch_size
    return int(min(100, max(3, 2e10 / max(work, 1))))


def calibrate(config: RunConfig, force: bool = False) -> dict:
    """Measure this config's cost key on this machine (seconds; cached). Builds a Keras
    model: call it from a training thread, a worker or `measure_in_background`."""
    cfg = config.resolved()
    if cfg.arch == "segment":
        from xray_core.errors import ConfigError
        raise ConfigError("segmentation runs are not calibrated on this machine yet: their estimate is rough")
    key = cost_key(cfg)
    old = _entry(key)
    if old and "step" in old and not force:
        return old
    with _measure_lock:
        old = _entry(key)
        if old and "step" in old and not force:
            return old
        m = _measure(cfg)
        entry = dict(old or {}, **m)    # keep learned ratios across a re-measurement
        _put(key, entry)
        return entry


def _measure(cfg: RunConfig) -> dict:
    from xray_core.data.dataset import Split
    from xray_core.models import build_model
    from xray_core.train.callbacks import Stream
    from xray_core.train.batches import batches
    from xray_core.train.job import TrainingJob
    rng = np.random.default_rng(0)
    k = _steps_to_time(cfg)
    bs = cfg.batch_size
    x = rng.random((bs * k, 32, 32, 1), dtype=np.float32)
    y = rng.integers(0, 4, bs * k).astype("int64")
    # The job's own input pipeline and per-batch streaming callback: a callback on every
    # batch makes Keras hand each step's logs to Python, which costs as much as a small
    # FC step itself. The job object only holds the streamed lists; it never runs.
    split = Split(x, y)
    holder = TrainingJob(cfg.replace(data="phantom"), probe=False)   # never started: it only listens
    t = time.perf_counter()
    model = build_model(cfg)
    build = time.perf_counter() - t
    from xray_core.tf_quiet import keras

    class _Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            epoch_at.append(time.perf_counter())

    # An epoch is timed to its on_epoch_end: what fit() does after that happens once a run,
    # and it sometimes stalls ~1 s (a seed-CNN calibration: 3 fit calls ended 0, 1.05 and
    # 1.15 s after their epoch), which counted once per epoch made 2-epoch CNN estimates
    # ~1.3 s an epoch too long. Kept apart, as `fit_end`, added once.
    timings, gaps, tails = [], [], []
    for i in range(3):          # trace + K steps, then K steps twice (the 2nd still warms up)
        ends: list[float] = []
        epoch_at: list[float] = []
        stream = Stream(holder, len(y), bs, None)
        t = time.perf_counter()
        model.fit(batches(split, bs, 0), epochs=1, verbose=0, callbacks=[stream, _Clock()], shuffle=False)
        done = time.perf_counter()
        end_of_epoch = epoch_at[-1] if epoch_at else done
        timings.append(end_of_epoch - t)
        tails.append(done - end_of_epoch)
        if i:
            gaps += list(np.diff(ends))
    first, second = timings[0], timings[-1]
    # steady per-step time between batch ends; the rest of a fit call is per-epoch cost
    # (a fresh shuffled iterator, epoch callbacks) that 30 steps would otherwise inflate.
    # The median: one pause (a GC, a neighbour) among 30 steps of 4 ms would add 40 %,
    # where a real epoch of 150+ steps spreads it thin.
    step = float(np.median(gaps)) if len(gaps) > 1 else second / k
    epoch_overhead = max(second - k * step, 0.0)
    # Validation, the probe and the test pass are each ONE evaluate/predict call a run:
    # a fixed cost per call (iterator, callbacks) plus a cost per batch. Timed with one
    # and with two batches to tell them apart; per patch from one call would count the
    # call's fixed cost once per 512 patches (a third of an FC epoch's validation).
    xv = np.resize(x, (2 * TEST_BATCH, 32, 32, 1))
    yv = np.resize(y, 2 * TEST_BATCH)

    firsts = []

    def timed(fn, n: int, batch: int) -> float:
        t = time.perf_counter()
        fn(xv[:n], yv[:n], batch)                    # trace (and warm)
        firsts.append(time.perf_counter() - t)
        best = math.inf
        for _ in range(3):                           # the best of 3: a call can stall like fit's end
            t = time.perf_counter()
            fn(xv[:n], yv[:n], batch)
            best = min(best, time.perf_counter() - t)
        return best

    def ev(a, b, batch):
        return model.evaluate(a, b, batch_size=batch, verbose=0)

    def pr(a, _b, batch):
        return model.predict(a, batch_size=batch, verbose=0)

    e1, e2 = timed(ev, VAL_BATCH, VAL_BATCH), timed(ev, 2 * VAL_BATCH, VAL_BATCH)
    p1, p2 = timed(pr, TEST_BATCH, TEST_BATCH), timed(pr, 2 * TEST_BATCH, TEST_BATCH)
    # a batch costs something: timing noise can make the two-batch call look no slower
    eval_batch, predict_batch = max(e2 - e1, 0.1 * e1), max(p2 - p1, 0.1 * p1)
    eval_call, predict_call = max(e1 - eval_batch, 0.0), max(p1 - predict_batch, 0.0)
    # Traces, paid once a run: each function's first call, and again for a short last batch
    # (2,368 test patches at 1,024 a batch end in 320): a corrected CNN's predict took 2.6 s
    # for its first 1,024 patches (1.3 s warm) and 5.2 s for its first 2,368 (2.5 s warm).
    eval_trace, predict_trace = max(firsts[0] - e1, 0.0), max(firsts[2] - p1, 0.0)

    def retrace(fn, batch: int, call: float, per_batch: float) -> float:
        n = batch + batch // 3
        t = time.perf_counter()
        fn(xv[:n], yv[:n], batch)
        return max(time.perf_counter() - t - (call + per_batch * n / batch), 0.0)

    eval_retrace = retrace(ev, VAL_BATCH, eval_call, eval_batch)
    predict_retrace = retrace(pr, TEST_BATCH, predict_call, predict_batch)
    # a real run pays the same once: the trace in its first epoch, the warm-up in its second
    return {"step": step, "epoch_overhead": epoch_overhead, "trace": max(first - second, 0.0),
            "fit_end": float(np.median(tails)),
            "warmup": max(timings[1] - second, 0.0), "build": build,
            "eval_call": eval_call, "eval_patch": eval_batch / VAL_BATCH,
            "predict_call": predict_call, "predict_patch": predict_batch / TEST_BATCH,
            "eval_trace": eval_trace, "eval_retrace": eval_retrace,
            "predict_trace": predict_trace, "predict_retrace": predict_retrace,
            "steps_timed": k, "measured_at": time.time()}


# ---- the estimate ----------------------------------------------------------------

def _compose(cfg: RunConfig, m: dict, n_train: int, n_val: int, n_test: int) -> dict:
    n = min(n_train, cfg.limit_train or n_train)
    steps = math.ceil(n / cfg.batch_size) if n else 0
    train = steps * m["step"]
    val = m["eval_call"] + n_val * m["eval_patch"] if n_val else 0.0
    probe = m["predict_call"] + PROBE_SIZE * m["predict_patch"] if cfg.arch == "fc" else 0.0
    per_epoch = train + val + probe + m.get("epoch_overhead", 0.0)
    # fit as the job times it (timing.fit_seconds): the first step's trace happens inside
    # Keras' fit. The first validation / probe / predict trace too, but forward-only
    # functions trace in a fraction of the train step's time: the one measured trace.
    # the first validation traces evaluate (again for a short last batch); the test pass
    # traces predict, unless the FC's probe already did (the short last batch still does)
    val_traces = (m.get("eval_trace", 0.0) + (m.get("eval_retrace", 0.0) if n_val % VAL_BATCH else 0.0)
                  if n_val else 0.0)
    fit = (m["trace"] + (m.get("warmup", 0.0) if cfg.epochs > 1 else 0.0) + cfg.epochs * per_epoch
           + m.get("fit_end", 0.0) + val_traces)
    before_fit = HANDOFF_SECONDS + m["build"]
    evaluation = (m["predict_call"] + n_test * m["predict_patch"]
                  + (0.0 if cfg.arch == "fc" else m.get("predict_trace", 0.0))
                  + (m.get("predict_retrace", 0.0) if n_test % TEST_BATCH else 0.0)) if n_test else 0.0
    # startup: what passes before the first point can show (overlaps fit by the trace)
    return {"total": before_fit + fit + evaluation, "fit": fit, "startup": before_fit + m["trace"],
            "per_epoch": per_epoch, "evaluation": evaluation}


def _finish(est: dict, m: dict) -> dict:
    r_fit, r_total = m.get("ratio_fit"), m.get("ratio_total")
    if r_fit and r_total:
        rest = est["total"] - est["fit"]
        fit = est["fit"] * r_fit
        # the learned total ratio covers start-up and evaluation as a whole
        total = max(fit, (est["fit"] + rest) * r_total)
        scale = (total - fit) / rest if rest > 0 else 1.0
        return {"total": total, "fit": fit, "startup": est["startup"] * scale,
                "per_epoch": est["per_epoch"] * r_fit, "evaluation": est["evaluation"] * scale,
                "source": "learned"}
    return dict(est, source="measured")


def cached_estimate(config: RunConfig, n_train: int, n_val: int = 0, n_test: int = 0) -> dict | None:
    """The measured/learned estimate if this cost key was measured on this machine, else
    None. Never builds a model: safe in a page's script thread."""
    cfg = config.resolved()
    if cfg.arch == "segment":       # never measured: the rough figure, corrected by this machine's runs
        m = _entry(SEGMENT_KEY)
        if not m or not m.get("ratio_fit"):
            return None
        return _finish(segment_rough(cfg, n_train, n_val, n_test), m)
    m = _entry(cost_key(cfg))
    if not m or "step" not in m:
        return None
    return _finish(_compose(cfg, m, n_train, n_val, n_test), m)


# Segmentation runs (arch segment) are not calibrated: the timing above trains on 32x32
# patches. Their rough estimate scales the U-Net's multiply-adds per film (cost.unet_cost)
# by what p3-unet's U-Net (755 M multiply-adds a film) measured on this project's 2-core CPU,
# XLA-compiled, 150 augmented films (2026-12-04, quiet): 10.0 s an epoch in batches of 8,
# 11.3 s in batches of 4 (+0.95 s validating 30 films), ~29 ms to map a film, and a first
# epoch ~13 s longer (the XLA compile).
_SEG_TRAIN_SECONDS_PER_MAC = 7.7e-11    # per training film, forward + backward + augmentation
_SEG_PREDICT_SECONDS_PER_MAC = 4.0e-11  # per film mapped (validation, test)
_SEG_STEP_SECONDS = 0.068               # fixed cost of one optimizer step
_SEG_STARTUP_SECONDS = 13.0             # build + the XLA compile of the training step
# Another machine can be much faster or slower than that one (a Zen 5 EPYC, 2026-12-04 afternoon:
# 5.5 s an epoch of batches of 4, not 12.2): every finished U-Net run teaches this machine's
# ratio to the rough figure, one ratio for all U-Nets (the rough figure already scales with the
# shape), kept under this key beside the patch models' calibrations.
SEGMENT_KEY = "segment-rough"


def segment_rough(cfg: RunConfig, n_train: int, n_val: int = 0, n_test: int = 0) -> dict:
    from xray_core.cost import unet_cost
    macs = unet_cost(cfg.input_size, cfg.depth, cfg.base_filters, cfg.batch_norm)["multiply_adds"]
    n = min(n_train, cfg.limit_train or n_train)
    steps = math.ceil(n / cfg.batch_size) if n else 0
    per_epoch = n * macs * _SEG_TRAIN_SECONDS_PER_MAC + steps * _SEG_STEP_SECONDS \
        + n_val * macs * _SEG_PREDICT_SECONDS_PER_MAC
    fit = _SEG_STARTUP_SECONDS + cfg.epochs * per_epoch
    evaluation = n_test * macs * _SEG_PREDICT_SECONDS_PER_MAC
    return {"total": fit + evaluation, "fit": fit, "startup": _SEG_STARTUP_SECONDS, "per_epoch": per_epoch,
            "evaluation": evaluation, "source": "rough"}


def rough_estimate(config: RunConfig, n_train: int, n_val: int = 0, n_test: int = 0) -> dict:
    from xray_core.models import estimate_seconds
    cfg = config.resolved()
    if cfg.arch == "segment":
        return segment_rough(cfg, n_train, n_val, n_test)
    fit = estimate_seconds(cfg, n_train, n_val)
    return {"total": fit, "fit": fit, "startup": 0.0, "per_epoch": fit / cfg.epochs,
            "evaluation": 0.0, "source": "rough"}


def estimate(config: RunConfig, n_train: int, n_val: int = 0, n_test: int = 0,
             measure: bool = True) -> dict:
    """Seconds for the whole run on this machine if it trains alone (see module doc).
    `measure=False`: never build a model (rough when nothing is cached)."""
    got = cached_estimate(config, n_train, n_val, n_test)
    if got is not None:
        return got
    if measure and config.arch != "segment":    # a segmentation run: rough (segment_rough)
        calibrate(config)
        return cached_estimate(config, n_train, n_val, n_test)
    return rough_estimate(config, n_train, n_val, n_test)


def measure_in_background(config: RunConfig) -> threading.Thread | None:
    """Calibrate in a daemon thread (None if already cached); one thread per key.

    Acceptable in the server process because the model built for timing is one small
    Keras model (FC 0.35 M params; the CNN's is the one the student is about to train
    anyway), a calibration takes seconds, calibrations run one at a time, and TF
    releases the GIL while it computes — the page keeps answering meanwhile."""
    cfg = config.resolved()
    key = cost_key(cfg)
    if cfg.arch == "segment" or key in _failed or cached_estimate(cfg, 1) is not None:
        return None
    with _lock:
        t = _measuring.get(key)
        if t is not None and t.is_alive():
            return t

        def run():
            try:
                calibrate(cfg)
            except Exception as e:   # the rough estimate stays; not retried on every page rerun
                _failed[key] = repr(e)
                _log.warning("estimate: calibrating %s failed, the rough estimate stays: %r", key, e)
        t = threading.Thread(target=run, name=f"xray-calibrate-{key}", daemon=True)
        _measuring[key] = t
    t.start()
    return t


def page_estimate(config: RunConfig, n_train: int, n_val: int = 0, n_test: int = 0) -> dict:
    """For the page's estimate caption: the cached estimate, or the rough one while a
    background measurement is started for next time (the next rerun shows it)."""
    got = cached_estimate(config, n_train, n_val, n_test)
    if got is not None:
        return got
    measure_in_background(config)
    return rough_estimate(config, n_train, n_val, n_test)


# ---- learning from finished runs -------------------------------------------------

def dataset_sizes(ds) -> tuple[int, int, int]:
    """Patches in the train, validation and test splits (0 when absent)."""
    return tuple(len(ds.split(k)) if ds.has(k) else 0 for k in ("train", "validation", "test"))


def learn_from_job(job) -> dict | None:
    """After a job finished (not stopped): its actual fit and total time teach the estimate."""
    res = job.snapshot().result or {}
    fit = (res.get("timing") or {}).get("fit_seconds", 0.0)
    if job.dataset is None or job.started_at is None or not fit:
        return None
    total = (job.ended_at or time.perf_counter()) - job.started_at
    return learn(job.config, *dataset_sizes(job.dataset), fit, total)


def learn(config: RunConfig, n_train: int, n_val: int, n_test: int,
          fit_seconds: float, total_seconds: float) -> dict | None:
    """Record how a finished (not stopped) run compared with its measured estimate;
    later estimates of this cost key are corrected by the running mean ratio."""
    cfg = config.resolved()
    if not (fit_seconds > 0 and total_seconds > 0):
        return None
    if cfg.arch == "segment":
        key, m = SEGMENT_KEY, _entry(SEGMENT_KEY) or {}
        est = segment_rough(cfg, n_train, n_val, n_test)
    else:
        key = cost_key(cfg)
        m = _entry(key)
        if not m or "step" not in m:
            return None
        est = _compose(cfg, m, n_train, n_val, n_test)
    r_fit, r_total = fit_seconds / est["fit"], total_seconds / est["total"]
    if not (math.isfinite(r_fit) and math.isfinite(r_total)):
        return None
    new = dict(m)
    for name, r in (("ratio_fit", r_fit), ("ratio_total", r_total)):
        # starts from 1.0 (the measurement itself): one run is no less noisy than the
        # timed steps (the same small CNN run took 7.2 s, then 9.1 s), so it counts half
        new[name] = (1 - _LEARN_WEIGHT) * (m.get(name) or 1.0) + _LEARN_WEIGHT * r
    new["runs_learned"] = int(m.get("runs_learned", 0)) + 1
    _put(key, new)
    return new
