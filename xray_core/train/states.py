"""A job's states, in the order a run goes through them."""
QUEUED, LOADING, TRAINING, EVALUATING, DONE, STOPPED, FAILED = (
    "queued", "loading", "training", "evaluating", "done", "stopped", "failed")
FINISHED = (DONE, STOPPED, FAILED)
