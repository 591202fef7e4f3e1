"""The one status line of a training job, shared by the Train and Classify pages."""
from __future__ import annotations

import streamlit as st

from xray_core.train.job import SCHEDULER, Snapshot

STATE_LABELS = {"training": "Training", "evaluating": "Evaluating on the test set", "done": "Done",
                "stopped": "Stopped"}


def fmt_time(s: float | None) -> str:
    if s is None:
        return "…"
    s = int(round(s))
    return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def job_status(snap: Snapshot, label: str) -> None:
    """Queue position, loading, failure, or a progress bar with epoch, step and ETA."""
    if snap.state == "queued":
        st.info(f"Waiting for a free trainer: position **{snap.queue_position or '…'}** in the queue "
                f"({SCHEDULER.status()['running']} of {SCHEDULER.cap} training now).")
    elif snap.state == "loading":
        st.info("Loading data and building the model…")
    elif snap.state == "failed":
        st.error(f"Training failed: {snap.error}")
    else:
        val = snap.history.get("val_accuracy") or []
        val_txt = f" · val acc {100 * val[-1]:.1f} %" if val else ""
        eta = "0s" if snap.finished else fmt_time(snap.eta)
        step = snap.steps_per_epoch if snap.state == "done" else snap.step
        where = f"epoch {min(snap.epoch + 1, snap.epochs)}/{snap.epochs} · step {step}/{snap.steps_per_epoch}"
        st.progress(snap.progress, text=f"{STATE_LABELS.get(snap.state, snap.state)} · {label} · {where}"
                    f"{val_txt} · elapsed {fmt_time(snap.elapsed)} · ETA {eta}")
