"""The reference course's seven experiments as named configs with their reported figures."""
from __future__ import annotations

from dataclasses import dataclass

from .config import RunConfig


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    lesson: str                    # what the experiment teaches, shown in the UI
    config: RunConfig
    reported: dict                 # the course's numbers: train/test accuracy (%), test loss


_FC = RunConfig(arch="fc", activation="relu", epochs=25, batch_size=64, lr=1e-5)
_CNN = RunConfig(arch="cnn", cnn_mode="seed", epochs=25, batch_size=64, lr=1e-5, l2=1e-2, dropout=0.3)

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("p1-task1", "Part 1 · Task 1: FC with ReLU",
           "The baseline: three dense layers, ReLU, Adam at lr 1e-5, mini-batches of 64, 25 epochs.",
           _FC, {"train_accuracy": 83.9, "test_accuracy": 66.8, "test_loss": 0.81}),
    Preset("p1-task2", "Part 1 · Task 2: LeakyReLU α=0.01",
           "A small negative slope keeps units that would 'die' under ReLU still learning.",
           _FC.replace(activation="leaky_relu", alpha=0.01),
           {"train_accuracy": 83.5, "test_accuracy": 69.1, "test_loss": 0.80}),
    Preset("p1-task3", "Part 1 · Task 3: 40 epochs",
           "Longer training raises train accuracy more than test accuracy: the start of overfitting.",
           _FC.replace(activation="leaky_relu", alpha=0.01, epochs=40),
           {"train_accuracy": 86.9, "test_accuracy": 67.4, "test_loss": 0.79}),
    Preset("p1-task4", "Part 1 · Task 4: batch size 32",
           "Smaller mini-batches: twice the updates per epoch, noisier gradients (watch the batch loss jitter).",
           _FC.replace(activation="leaky_relu", alpha=0.01, epochs=40, batch_size=32),
           {"train_accuracy": 89.7, "test_accuracy": 66.8, "test_loss": 0.83}),
    Preset("p1-task5", "Part 1 · Task 5: batch normalisation",
           "Normalising each layer's inputs speeds learning; train accuracy jumps, test much less.",
           _FC.replace(activation="leaky_relu", alpha=0.01, epochs=40, batch_size=32, batch_norm=True),
           {"train_accuracy": 94.6, "test_accuracy": 69.7, "test_loss": 0.83}),
    Preset("p2-task1", "Part 2 · Task 1: the course CNN",
           "Five 3×3 convs (64-128-128-256-256) with dropout and BatchNormalization(axis=1), lr 1e-5, L2 1e-2. "
           "It barely learns: find out why, then switch to corrected mode.",
           _CNN, {"test_accuracy": 34.2}),
    Preset("p2-task2", "Part 2 · Task 2: half the filters",
           "Halving every filter count cuts the parameters from 3.27 M to 1.39 M.",
           _CNN.replace(filters=(32, 64, 64, 128, 128)), {"test_accuracy": 25.7}),
    # Not a course task: the course's train >> test gap (94.6 vs 69.7 %) does not appear on
    # the full phantom or real splits, only on a small training subset (bench/overfit.py).
    Preset("p1-task5-small", "Part 1 · Task 5 on 200 patches: overfitting",
           "Task 5 trained on only 200 patches (50 per class): the net learns the training "
           "patches far better than new ones, the course's train >> test gap. Measured here "
           "(seed 0): phantom train 75.0 % vs test 61.6 %; real JSRT patches 71.5 % vs 55.5 %. "
           "On the full 9,600 patches the gap is gone (phantom 88.7 vs 91 %, real about equal).",
           _FC.replace(activation="leaky_relu", alpha=0.01, epochs=40, batch_size=32, batch_norm=True,
                       limit_train=200),
           {"train_accuracy": 94.6, "test_accuracy": 69.7, "test_loss": 0.83}),
]}


def get_preset(name: str) -> Preset:
    from .errors import ConfigError
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def matching_preset(config: RunConfig) -> Preset | None:
    """The preset this config is, ignoring the seed, data and patch limit (None if edited)."""
    norm = lambda c: c.resolved().replace(seed=0, data="phantom", limit_train=None)  # noqa: E731
    for p in PRESETS.values():
        if norm(p.config) == norm(config):
            return p
    return None
