"""The Ray backend's scenarios, run in ONE process inside a private network namespace.

Ray binds to the machine's network address even when told 127.0.0.1, so tests/test_ray.py
runs this file as `unshare -n` (loopback brought up, nothing else): no packet can leave.
It starts a two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head and a
second node with a custom resource), runs every scenario, and prints one JSON document
that the tests check. Each scenario is bounded in time.

    unshare -n bash -c 'ip link set lo up && python -m tests.ray_scenarios'
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("XRAY_LAB_HOME", tempfile.mkdtemp(prefix="xray-lab-ray-"))


def toy():
    from tests.conftest import make_split
    from xray_core.data.dataset import Dataset
    return Dataset("toy", {"train": make_split(640, 1), "validation": make_split(128, 2),
                           "test": make_split(128, 3)})


def wait(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def run_job(cfg, ds, backend, timeout=300):
    from xray_core.train.job import TrainingJob
    from xray_core.runs.service import trainer_for
    job = TrainingJob(cfg, ds, trainer=trainer_for("ray" if backend == "ray" else "thread")).start()
    job.join(timeout)
    return job


def same_curve(ds):
    from xray_core.config import RunConfig
    cfg = RunConfig(epochs=2, batch_size=32, lr=1e-3, seed=7)
    seen_live = []
    from xray_core.train.job import TrainingJob
    from xray_core.train.backends.ray import OnRay
    job = TrainingJob(cfg, ds, trainer=OnRay()).start()
    while not job.snapshot().finished and len(seen_live) < 2000:   # progress streams while training
        s = job.snapshot()
        if s.state == "training":
            seen_live.append(len(s.batch_loss))
        time.sleep(0.05)
    job.join(300)
    local = run_job(cfg, ds, "local")
    a, b = job.snapshot(), local.snapshot()
    rec = job.record()
    import numpy as np
    diff = float(np.max(np.abs(np.array(a.batch_loss) - np.array(b.batch_loss)))) if len(a.batch_loss) == len(
        b.batch_loss) else None
    return {"state": a.state, "local_state": b.state, "batches": len(a.batch_loss),
            "local_batches": len(b.batch_loss), "max_abs_batch_loss_diff": diff,
            "val_acc": a.history["val_accuracy"], "local_val_acc": b.history["val_accuracy"],
            "test_acc": (a.result or {}).get("test", {}).get("accuracy"),
            "local_test_acc": (b.result or {}).get("test", {}).get("accuracy"),
            "live_points_seen": sorted(set(seen_live))[:50], "model_back": job.model is not None,
            "timing": rec["timing"], "error": a.error}


def placement(ds, second_node_id):
    from xray_core.train.backends import ray as ray_backend
    from xray_core.config import RunConfig
    os.environ["XRAY_LAB_RAY_RESOURCE"] = "second"
    try:
        job = run_job(RunConfig(epochs=1, batch_size=64, lr=1e-3, seed=1), ds, "ray")
    finally:
        del os.environ["XRAY_LAB_RAY_RESOURCE"]
    return {"state": job.snapshot().state, "node_id": job.where.get("node_id"), "second_node_id": second_node_id,
            "cap": ray_backend.cluster_cap(), "datasets_put": len(ray_backend._datasets), "error": job.snapshot().error}


def stop_within_a_batch(ds):
    from xray_core.config import RunConfig
    from xray_core.train.job import TrainingJob
    from xray_core.train.backends.ray import OnRay
    job = TrainingJob(RunConfig(epochs=200, batch_size=16, lr=1e-3), ds, trainer=OnRay()).start()
    ok = wait(lambda: len(job.snapshot().batch_loss) >= 5 or job.snapshot().finished, 180)
    at_stop = len(job.snapshot().batch_loss)
    job.stop()
    job.join(120)
    s = job.snapshot()
    return {"reached_training": ok, "state": s.state, "batches_at_stop": at_stop,
            "stop_arrived_at_batch": job.where.get("stop_arrived_at_batch"), "batches_final": len(s.batch_loss),
            "has_test": bool((s.result or {}).get("test")), "error": s.error}


def actor_killed(ds):
    from xray_core.config import RunConfig
    from xray_core.train.job import TrainingJob
    from xray_core.train.backends.ray import OnRay
    job = TrainingJob(RunConfig(epochs=500, batch_size=16, lr=1e-3), ds, trainer=OnRay()).start()
    ok = wait(lambda: (len(job.snapshot().batch_loss) >= 3 and "pid" in job.where) or job.snapshot().finished, 180)
    pid = job.where.get("pid")
    if pid:
        os.kill(pid, signal.SIGKILL)
    t = time.time()
    job.join(120)
    s = job.snapshot()
    after = run_job(RunConfig(epochs=1, batch_size=64, lr=1e-3), ds, "ray")   # the next job still runs
    return {"reached_training": ok, "state": s.state, "error": s.error, "seconds_to_fail": time.time() - t,
            "next_job_state": after.snapshot().state}


def cli_train():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "run.json"
        p = subprocess.run([sys.executable, "-m", "xray_core", "train", "--backend", "ray", "--epochs", "1",
                            "--limit-train", "256", "--json", str(out)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
        rec = json.loads(out.read_text()) if out.exists() else {}
    return {"code": p.returncode, "stderr_tail": p.stderr.strip().splitlines()[-1:] if p.stderr.strip() else [],
            "timing": rec.get("timing"), "test": (rec.get("test") or {}).get("accuracy")}


def unreachable():
    """No cluster at RAY_ADDRESS: the job fails in one line, bounded in time (separate process: ray.init is
    once per process)."""
    code = ("import time,os,sys; sys.path.insert(0, %r)\n"
            "from xray_core.config import RunConfig\nfrom xray_core.train.job import TrainingJob\n"
            "from tests.ray_scenarios import toy\n"
            "t=time.time(); from xray_core.train.backends.ray import OnRay\nj=TrainingJob(RunConfig(epochs=1), toy(), trainer=OnRay()).start(); j.join(240)\n"
            "s=j.snapshot(); print(repr((s.state, s.error, round(time.time()-t,1))))\n") % str(REPO)
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    try:
        import ast
        state, error, secs = ast.literal_eval(p.stdout.strip().splitlines()[-1])
    except Exception:
        return {"code": p.returncode, "raw": p.stdout[-500:] + p.stderr[-500:]}
    return {"state": state, "error": error, "seconds": secs}


def teardown(cluster) -> dict:
    """Disconnect and stop the test cluster. Cluster.shutdown() refuses (ValueError) while this
    process is connected to the head, and it was once seen connected again after ray.shutdown()
    (CI, 2026-11-27: a thread re-initialised Ray): disconnect until it stays so, then retry."""
    import threading

    import ray
    from ray._private import worker as ray_worker
    threads = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive())
    errors = []
    for _ in range(5):
        ray.shutdown()
        try:
            cluster.shutdown()
            break
        except ValueError as e:   # connected again: Ray disconnected us before raising, so try once more
            errors.append(str(e)[:120])
            time.sleep(1.0)
    return {"threads_at_teardown": threads, "retries": errors,
            "connected_after": ray_worker.global_worker.node is not None}


def main() -> None:
    from ray.cluster_utils import Cluster
    out: dict = {}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 150 * 1024 * 1024, "include_dashboard": False})
    second = cluster.add_node(num_cpus=1, resources={"second": 1}, object_store_memory=100 * 1024 * 1024)
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        cluster.wait_for_nodes()
        ds = toy()
        for name, fn in [("same_curve", lambda: same_curve(ds)),
                         ("placement", lambda: placement(ds, second.node_id)),
                         ("stop", lambda: stop_within_a_batch(ds)),
                         ("actor_killed", lambda: actor_killed(ds)),
                         ("cli_train", cli_train)]:
            t = time.time()
            try:
                out[name] = fn()
            except Exception as e:
                out[name] = {"exception": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
            out[name]["scenario_seconds"] = round(time.time() - t, 1)
            print(f"scenario {name}: {time.time() - t:.1f}s", file=sys.stderr, flush=True)
    finally:
        out["teardown"] = teardown(cluster)
        print(f"teardown: {out['teardown']}", file=sys.stderr, flush=True)
    out["unreachable"] = unreachable()
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
