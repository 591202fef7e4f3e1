"""The reference course's seven experiments as named configs with their reported figures."""
from __future__ import annotations

from dataclasses import dataclass

from xray_core.config import KNOBS, PRESET_FREE_KNOBS, RunConfig, applies, arch_defaults, to_text
from xray_core.errors import ConfigError


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
    # Not a course experiment: the CNN as the app teaches to fix it, sized for a lesson.
    # 'valid' padding: no ring of zeros around the patch, so each conv shrinks the map
    # (32 -> 30 -> 15 -> 13 -> 11 -> 5 -> 3 -> 1). The network then reads only real pixels:
    # it cannot learn to rely on a zero border the whole film does not have, so the dense
    # anatomy map (one pass over the film) is exactly the patch-by-patch one; and its small
    # late maps make it 3.4x cheaper per patch (8.8 M multiply-adds vs 29.8 M with 'same').
    # Half-width filters (32-64-64-128-128). Measured on the real split, 3 seeds each, side
    # by side: 88.7 +- 0.4 % test vs p1-task5's 81.8 +- 1.4 % at 2.3x its fit time; with
    # 'same' padding the same filters gave 86.7 +- 1.6 % at 3.8x, quarter width ~83.7 % at
    # ~2x. BN over channels, Adam lr 1e-3 with cosine decay to 0 (the last epochs settle
    # instead of jumping +-3 points on validation), light L2 1e-4, dropout 0.2 (0.3 before
    # the dense head: head_dropout, said here rather than left to the default), 12 epochs. No
    # augmentation: the patches are small and anatomy is not
    # mirror-symmetric.
    Preset("p2-corrected", "Part 2 · The CNN, corrected",
           "The same five convs with batch norm over channels, a learning rate that trains (decaying "
           "to zero), light L2, half the filters and 'valid' padding (no zeros around the patch). On "
           "held-out patients it beats the best FC net (p1-task5) by about 7 points (88.7 vs 81.8 %, "
           "3 seeds each), at about 2.3x its training time, and its anatomy map takes one pass over the film.",
           RunConfig(arch="cnn", cnn_mode="corrected", filters=(32, 64, 64, 128, 128), padding="valid",
                     epochs=12, batch_size=64, lr=1e-3, l2=1e-4, dropout=0.2, head_dropout=0.3,
                     lr_schedule="cosine"),
           {}),
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
    # Course Part 3, from patches to pixels (issue 24): a U-Net maps the whole film at once.
    # The recipe, measured on jsrt_films (150 training films, 37 held-out patients' test films,
    # this 2-core CPU): films shrunk to 128x128 inside the network (the map grown back to
    # 256x256), 4 levels from 16 filters, batch norm, cross-entropy + Dice, Adam in batches of
    # 4 at 5e-3 after a warm-up from 5e-4, cosine decay, shift/scale/rotate/contrast
    # augmentation, 22 epochs: as many as fit in 5 minutes on the slowest 2-core machine this
    # project has measured it on, XLA-compiled (README, Part 3, has the figures per seed; at
    # 3e-3 the clavicles' Dice was .875-.879, at 5e-3 .881-.889, at 8e-3 .882 for seed 0;
    # batches of 8 were faster an epoch but drew the clavicles' edges less well: 24 epochs of
    # 8 gave .867, 24 of 4 .881; batches of 2 gave .881-.886 but cost 10 % more an epoch and a
    # heart Dice of .949 for one seed). The small one works at
    # 64x64 for 9 epochs without augmentation (a second an epoch would go to warping 256x256
    # films, and in so few epochs it does not pay off), also at 5e-3 (seeds 0/1/2: 0.9634/0.9645/
    # 0.9643; at 3e-3 0.9590/0.9628/0.9620).
    Preset("p3-unet", "Part 3 · From patches to pixels: a U-Net",
           "A segmentation network labels every pixel of the whole film in one pass. Its encoder "
           "shrinks the film step by step until one pixel sees most of the chest (the context a "
           "32x32 patch never has), its decoder grows the map back, and skip connections bring back "
           "the fine detail. Trained on whole films and their label maps; compare its map with the "
           "prior's (each pixel's most frequent label, image ignored) and with a patch model's.",
           RunConfig(arch="segment", input_size=128, depth=4, base_filters=16, batch_norm=True, dropout=0.0,
                     loss="both", augment=True, epochs=22, batch_size=4, lr=5e-3, l2=0.0,
                     lr_schedule="warmup_cosine"),
           {}),
    Preset("p3-unet-small", "Part 3 · A U-Net for a class (about a minute)",
           "The same U-Net working on films shrunk to 64x64, for 9 epochs and without augmentation: "
           "under a minute on two cores, and already far better than the prior and any patch model's "
           "map. The thin clavicles suffer most from the smaller input.",
           RunConfig(arch="segment", input_size=64, depth=4, base_filters=16, batch_norm=True, dropout=0.0,
                     loss="both", augment=False, epochs=9, batch_size=8, lr=5e-3, l2=0.0,
                     lr_schedule="warmup_cosine"),
           {}),
]}


for _p in PRESETS.values():  # every preset is a valid config by the knob table (cost caps are per server)
    _p.config.validate(caps=False)

IGNORED = PRESET_FREE_KNOBS  # a preset run may use any value of these (the table's preset_free: seed, data, patches)


# The reference course's own seven experiments (its table, the report, the study); other
# presets are the app's additions.
COURSE_PRESETS = ("p1-task1", "p1-task2", "p1-task3", "p1-task4", "p1-task5", "p2-task1", "p2-task2")

def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}") from None


def _effective(config: RunConfig) -> dict:
    """The knob values that shape the run: resolved, and knobs that do not apply
    (alpha without LeakyReLU, momentum without SGD, ...) at their defaults."""
    r = config.resolved()
    base = RunConfig()
    return {n: (getattr(r, n) if applies(n, r) else getattr(base, n)) for n in KNOBS}


def _changes(preset: Preset, config: RunConfig) -> list[str]:
    """Knobs of config that differ from the preset, in table order, ignoring lr/L2/dropout
    that merely follow a changed architecture's own defaults."""
    mine, theirs = _effective(config), _effective(preset.config)
    own = arch_defaults(mine["arch"], mine["cnn_mode"])
    moved = (mine["arch"], mine["cnn_mode"]) != (theirs["arch"], theirs["cnn_mode"])
    return [n for n in KNOBS if n not in IGNORED and mine[n] != theirs[n]
            and not (moved and n in own and mine[n] == own[n])]


def matching_preset(config: RunConfig) -> Preset | None:
    """The preset this config is, ignoring the seed, data and patch limit (None if edited)."""
    for p in PRESETS.values():
        if not _changes(p, config):
            return p
    return None


def _short(name: str, value) -> str:
    k = KNOBS[name]
    if k.kind is bool:
        return k.noun if value else f"no {k.noun}"
    text = to_text(value)
    out = k.short.format(noun=k.noun, value=value if "{value:" in k.short else text,
                         label=k.choice_labels.get(value, text))
    return out[:-1] if value == 1 and out.endswith(" epochs") else out


def describe(config: RunConfig, most: int = 3) -> str:
    """A run's label: the closest preset plus what changed, e.g. "p1-task5, 10 epochs"."""
    r = config.resolved()
    # a preset of the run's own architecture first: a small U-Net is "p3-unet-small, ...",
    # never "p1-task1, Segmentation (U-Net), ..." (U-Net knobs do not apply to p1's FC)
    best = min(PRESETS.values(), key=lambda p: (p.config.arch != r.arch, len(_changes(p, config))))  # first wins a tie
    changed = _changes(best, config)
    parts = [_short(n, getattr(r, n)) for n in changed[:most]]
    if len(changed) > most:
        parts.append(f"+{len(changed) - most} more")
    if r.limit_train:
        parts.append(_short("limit_train", r.limit_train))
    return ", ".join([best.name, *parts])
