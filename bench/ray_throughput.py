"""Throughput of many short training jobs on a Ray cluster of 1 vs 2 nodes on this machine.

Re-runs itself inside a private network namespace (`unshare -n`, loopback only; needs root),
starts a local Ray cluster (ray.cluster_utils.Cluster) with one 1-CPU node, runs --jobs
short FC jobs through the app's own path (TrainingJob(trainer=OnRay()), at most as many at
once as the cluster's cap), then the same with a second 1-CPU node added. Prints JSON:
jobs per minute for each, and the ratio.

    python -m bench.ray_throughput [--jobs 8] [--epochs 2]
"""
from __future__ import annotations

if __package__ in (None, ""):
    import pathlib
    import sys
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import argparse
import os
import subprocess
import sys
import time

from bench._common import REPO, emit, log, machine


def _batch(ds, n_jobs: int, epochs: int) -> dict:
    from xray_core.train.backends import ray as ray_backend
    from xray_core.config import RunConfig
    from xray_core.train.backends.ray import OnRay
    from xray_core.train.job import Scheduler, TrainingJob
    sched = Scheduler(ray_backend.cluster_cap())
    t = time.perf_counter()
    jobs = [TrainingJob(RunConfig(epochs=epochs, batch_size=32, lr=1e-3, seed=i), ds, scheduler=sched,
                        trainer=OnRay()).start() for i in range(n_jobs)]
    for j in jobs:
        j.join(900)
    wall = time.perf_counter() - t
    states = [j.snapshot().state for j in jobs]
    nodes = sorted({j.where.get("node_id", "?")[:8] for j in jobs})
    return {"cap": sched.cap, "wall_seconds": wall, "jobs_per_minute": 60 * n_jobs / wall,
            "states": {s: states.count(s) for s in set(states)}, "nodes_used": nodes}


def inside(args) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray.cluster_utils import Cluster

    from tests.ray_scenarios import toy
    ds = toy()
    out = {"bench": "ray_throughput", "machine": machine(), "jobs": args.jobs, "epochs": args.epochs,
           "data": "toy 640 train patches (tests/conftest.make_split), FC 300-150-4, batch 32"}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 150 << 20,
                                                            "include_dashboard": False})
    os.environ["RAY_ADDRESS"] = cluster.address
    try:
        cluster.wait_for_nodes()
        _batch(ds, 1, 1)                      # warm: package shipped, TF imported once per worker
        log("1 node…")
        out["one_node"] = _batch(ds, args.jobs, args.epochs)
        cluster.add_node(num_cpus=1, object_store_memory=100 << 20)
        cluster.wait_for_nodes()
        _batch(ds, 2, 1)
        log("2 nodes…")
        out["two_nodes"] = _batch(ds, args.jobs, args.epochs)
        out["ratio_two_vs_one"] = out["two_nodes"]["jobs_per_minute"] / out["one_node"]["jobs_per_minute"]
    finally:
        ray.shutdown()
        cluster.shutdown()
    emit(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inside:
        return inside(args)
    cmd = f"ip link set lo up && exec {sys.executable} -m bench.ray_throughput --inside --jobs {args.jobs} " \
          f"--epochs {args.epochs}"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "XRAY_LAB_BACKEND")}
    sys.exit(subprocess.run(["unshare", "-n", "bash", "-c", cmd], cwd=REPO, env=env).returncode)


if __name__ == "__main__":
    main()
