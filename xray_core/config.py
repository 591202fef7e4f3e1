"""RunConfig: the one typed, serialisable description of a training run.

The sidebar, the presets, the CLI, the URL query string and the saved run record
all speak it (like tensorflow/playground's state.ts). Each field carries its knob
in its metadata (`KNOBS`): type, default per architecture, range, choices, label,
help and format, and what else the knob is: sweepable (`sweep`: the Experiments
page and `sweep --knob`), part of a training step's cost (`step_cost`: the
estimates' cache key and the cost caps), free for a preset (`preset_free`: a preset
run may use any value), a column of the runs table (`column`). The CLI flags
(cli/main.py), the URL parser/writer (below), the sidebar widgets
(xray_ui/controls.py), the presets' check, the sweeps and the runs table are all made
from that table, so adding a knob is one field here plus its use in models.py.

The anatomy map's knobs (stride, method) are not part of a training run: they are
the rows of `MAP_KNOBS` (same `Knob` rows), read by the Classify page's widget and
the `classify` command's flags.

Fields left as None mean "the architecture's default" and are filled by
`resolved()`, so a CNN switched to corrected mode gets settings that train unless
the student overrides them.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from typing import Any

from xray_core import FILM, PATCH
from xray_core.errors import ConfigError
from xray_core import settings

DEFAULT_FILTERS = (64, 128, 128, 256, 256)


@dataclass(frozen=True)
class Sweep:
    """How a knob is swept (Experiments page, `sweep --knob`)."""
    values: str                         # the values first suggested, e.g. "16,32,64,128"
    label: str | None = None            # how the sweep names it; default: the knob's noun
    log: bool = False                   # the sweep's chart may use a log axis (values spanning >= 20x)
    # A sweep of something derived from the knob rather than the knob itself (filter_scale
    # multiplies the five filter counts): its own name, value type and range (min excluded).
    name: str | None = None
    kind: type | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Column:
    """The knob's column in the runs table (Train page)."""
    title: str
    width: int | str | None = None      # pixels or "small" | "medium" | "large"
    format: str | None = None           # printf format of a number column


@dataclass(frozen=True)
class Knob:
    """One row of the knob table. Ranges are inclusive: what validation accepts is
    exactly what the widget can show, so every link the config accepts renders."""
    kind: type                          # int, float, bool, str or tuple (the CNN filters)
    label: str                          # the widget's label
    noun: str                           # how messages name it ("batch size")
    help: str = ""                      # what it changes and what to expect (UI help, one place)
    min: float | None = None
    max: float | None = None
    cap: str | None = None              # a cost cap (CAPS) that sets max, per server
    choices: tuple = ()
    choice_labels: dict = field(default_factory=dict)
    per_arch: dict | None = None        # default per "fc", "cnn/seed", "cnn/corrected" (field default None)
    widget: str | None = None           # radio | select | slider | number | checkbox | text | None
    step: float | None = None
    format: str | None = None           # printf format of the widget
    off: Any = None                     # the widget's value for None (limit_train: 0 = all patches)
    section: str = "model"              # sidebar section: model | training
    when: tuple[str, tuple] | None = None  # only used when knob when[0] has one of the values when[1]
    picks_defaults: bool = False        # changing it loads the architecture's own per_arch defaults
    flag: bool = True                   # a CLI flag --name-with-dashes
    summary: bool = True                # also a flag of `summary` (not only of `train`)
    short: str = "{noun} {value}"       # in run labels: "p1-task5, 10 epochs"
    # What else the knob is (each derived list reads these flags, never a list of names):
    sweep: Sweep | None = None          # sweepable, and how (None: not sweepable)
    # Changes what one training step costs (model shape, batch, optimizer): the estimates'
    # cache key (estimate.cost_key) and the cost caps (cost.py reads only these knobs) use
    # exactly the flagged knobs. The text is the knob's part of the cache key ("bs{value}";
    # a bool: the text when on, "no" + text when off).
    step_cost: str | None = None
    step_cost_default_silent: bool = False  # left out of the key at its default (added after keys were cached)
    preset_free: bool = False           # a preset run may use any value (still "p1-task1" with another seed)
    column: Column | None = None        # shown in the runs table, under this column


def knob(default: Any, **kw: Any) -> Any:
    return field(default=default, metadata={"knob": Knob(**kw)})


def _choices(labels: dict) -> dict:
    return dict(choices=tuple(labels), choice_labels=labels)


# ---- cost caps -------------------------------------------------------------------
# One student must not hold the class's trainers for hours, and a model must fit the
# server's memory next to a class's other runs. Defaults let every course experiment
# through with room to explore: the course CNN has 3.27 M parameters and ~116 M
# multiply-adds per patch (~35-55 s/epoch on 2 cores); 5 M / 150 M leave room for wider
# dense layers or a few more filters but refuse a doubled CNN (~8.6 M, ~460 M: about
# four times as slow). 200 epochs is 5x the longest course task; batch 1024 is a tenth
# of the real training split, beyond which an epoch is only a handful of updates and the
# CNN's activations alone need gigabytes. A teacher sets other limits by environment.

@dataclass(frozen=True)
class Cap:
    env: str
    default: int
    says: str       # the refused value, in words
    advice: str


CAPS = {
    "params": Cap("XRAY_LAB_MAX_PARAMS", 5_000_000, "this model has {:,} parameters",
                  "use fewer filters, e.g. Halve them"),
    "multiply_adds": Cap("XRAY_LAB_MAX_MACS", 150_000_000, "this model needs {:,} multiply-adds per patch",
                         "use fewer filters, e.g. Halve them"),
    # a segmentation model maps a whole film at once: its multiply-adds are counted per film.
    # p3-unet needs 755 M (input 128, depth 4, 16 base filters: ~17 s an epoch on 150 films);
    # 3.2 G lets a student double its input size or its filters (about four times as slow).
    "film_multiply_adds": Cap("XRAY_LAB_MAX_FILM_MACS", 3_200_000_000,
                              "this segmentation model needs {:,} multiply-adds per film",
                              "use fewer base filters or a smaller input size"),
    "epochs": Cap("XRAY_LAB_MAX_EPOCHS", 200, "{:,} epochs", "use fewer epochs"),
    "batch_size": Cap("XRAY_LAB_MAX_BATCH", 1024, "batch size {:,}", "use a smaller batch size"),
}


def cap(name: str) -> int:
    """This server's limit: the teacher's environment variable, else the default."""
    c = CAPS[name]
    raw = settings.raw(c.env)
    if not raw:
        return c.default
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{c.env} must be a whole number >= 1, got {raw!r} (fix the server's environment)")
    return value


def _over_cap(name: str, value: int) -> ConfigError:
    c = CAPS[name]
    return ConfigError(f"{c.says.format(value)}, more than this server's limit of {cap(name):,}: {c.advice} "
                       f"(a teacher can raise the limit with {c.env})")


# ---- the table ----------------------------------------------------------------------

@dataclass(frozen=True)
class RunConfig:
    arch: str = knob(
        "fc", kind=str, label="Architecture", noun="architecture", widget="radio", picks_defaults=True,
        **_choices({"fc": "Fully connected", "cnn": "CNN", "segment": "Segmentation (U-Net)"}), short="{label}",
        step_cost="{value}", column=Column("arch", 50),
        help="FC flattens the 32×32 patch into 1,024 numbers and connects every pixel to every unit: "
             "it cannot know that neighbouring pixels belong together. A CNN slides small 3×3 filters over the "
             "image, sharing the same weights everywhere, so a conv layer needs far fewer parameters than a "
             "dense layer of the same width. Both label one patch at a time. Segmentation (course Part 3) "
             "labels every pixel of the whole film at once with a U-Net: an encoder that shrinks the film "
             "to see context, a decoder that grows it back, and skip connections that bring back the "
             "detail; it trains on whole films and their label maps.")
    activation: str = knob(
        "relu", kind=str, label="Activation", noun="activation", widget="select", short="{label}",
        step_cost="{value}", column=Column("activation", 90),
        **_choices({"relu": "ReLU", "leaky_relu": "LeakyReLU", "tanh": "tanh", "sigmoid": "sigmoid", "elu": "ELU"}),
        help="ReLU passes positives and zeroes negatives; a unit whose input stays negative outputs 0 "
             "and gets no gradient, so it may never recover ('dying ReLU': watch the dead-unit monitor). "
             "LeakyReLU keeps a small slope α for negatives so such units still learn. tanh and sigmoid "
             "saturate: for large inputs their gradient vanishes. ELU is smooth and negative below zero.")
    alpha: float = knob(  # LeakyReLU negative slope
        0.01, kind=float, label="LeakyReLU α", noun="alpha", min=0.0, max=0.999, widget="slider", step=0.01,
        format="%.3g", when=("activation", ("leaky_relu",)), short="α {value}",
        sweep=Sweep("0,0.01,0.1,0.3", label="LeakyReLU α"),
        help="LeakyReLU's slope for negative inputs. 0 is plain ReLU; the course uses 0.01. Larger slopes "
             "keep more gradient flowing but make the unit more linear.")
    cnn_mode: str = knob(
        "seed", kind=str, label="CNN mode", noun="CNN mode", widget="radio", picks_defaults=True,
        **_choices({"seed": "seed", "corrected": "corrected"}), when=("arch", ("cnn",)), short="{label}",
        step_cost="{value}", column=Column("mode", 80),
        help="seed: the course's CNN exactly, including BatchNormalization(axis=1), which on NHWC tensors "
             "normalises image rows instead of channels, and lr 1e-5 under L2 1e-2: it barely learns. "
             "corrected: batch norm over channels before the activation, lr 1e-3, light L2.")
    filters: tuple[int, ...] = knob(
        DEFAULT_FILTERS, kind=tuple, label="Filters (five conv layers)", noun="filter counts", min=1, max=2048,
        widget="text", when=("arch", ("cnn",)), short="filters {value}", step_cost="{value}",
        column=Column("filters", "medium"),
        sweep=Sweep("0.25,0.5,1", label="filter scale", name="filter_scale", kind=float, min=0, max=16),
        help="Number of 3×3 filters in each of the five conv layers (course: 64,128,128,256,256). Each "
             "filter is a feature detector; halving them roughly halves the conv parameters.")
    padding: str = knob(
        "same", kind=str, label="Conv padding", noun="padding", widget="radio", when=("arch", ("cnn",)),
        **_choices({"same": "same", "valid": "valid"}), short="padding {value}",
        step_cost="{value}", step_cost_default_silent=True,   # 'valid' shrinks every map: ~3x fewer multiply-adds
        help="same: each 3×3 conv adds a ring of zeros so its output keeps the input's size (the course's "
             "choice); the patch's border is then zeros the network learns to rely on. valid: no zeros, each "
             "conv shrinks the map by 2 (32 → 30 → … → a 1×1 map), so the network only ever sees real "
             "pixels: cheaper, and an anatomy map of the whole film in one pass gives exactly the "
             "patch-by-patch labels.")
    batch_norm: bool = knob(  # FC and U-Net; the CNN always has its batch norm layers
        False, kind=bool, label="Batch normalisation", noun="batch norm", widget="checkbox",
        when=("arch", ("fc", "segment")), short="batch norm {value}", step_cost="bn", column=Column("bn", 40),
        help="Batch normalisation rescales each layer's outputs to zero mean and unit variance over the "
             "mini-batch, then learns a scale and shift. It makes training faster and less sensitive to "
             "the learning rate (course Task 5). The CNN always has its batch-norm layers; the U-Net has "
             "one after each conv when this is on.")
    dropout: float | None = knob(
        None, kind=float, label="Dropout", noun="dropout", min=0.0, max=0.999, widget="slider", step=0.05,
        format="%.3g", per_arch={"fc": 0.0, "cnn/seed": 0.3, "cnn/corrected": 0.2, "segment": 0.0},
        sweep=Sweep("0,0.2,0.5"),
        help="During training, randomly silences this share of units so the network cannot rely on any "
             "single one: a regulariser against overfitting. Off at test time. (The U-Net applies it once, "
             "after its bottleneck.)")
    head_dropout: float = knob(  # the corrected CNN only; the seed CNN uses `dropout` there too, as the course
        0.3, kind=float, label="Dropout before the dense head", noun="head dropout", min=0.0, max=0.999,
        widget="slider", step=0.05, format="%.3g", when=("cnn_mode", ("corrected",)), short="head dropout {value}",
        help="The corrected CNN's dropout between its 512- and 128-unit dense layers, where most of its "
             "parameters are (the convs use Dropout above). The course's CNN uses one rate for both.")
    epochs: int = knob(
        25, kind=int, label="Epochs", noun="epochs", min=1, cap="epochs", widget="number", step=1,
        section="training", short="{value} epochs", sweep=Sweep("5,10,25"), column=Column("epochs", 60),
        help="One epoch = one pass over all training patches. More epochs raise training accuracy; when "
             "validation accuracy stops rising while training accuracy keeps climbing, the model overfits.")
    batch_size: int = knob(
        64, kind=int, label="Batch size", noun="batch size", min=1, cap="batch_size", widget="number", step=8,
        section="training", short="batch {value}", step_cost="bs{value}",
        sweep=Sweep("16,32,64,128", log=True), column=Column("batch", 55),
        help="Patches per weight update (mini-batch gradient descent). Small batches: more, noisier "
             "updates per epoch (see the batch-loss jitter, course Task 4). Batch size 1 is plain SGD; "
             "the whole set is batch gradient descent.")
    lr: float | None = knob(
        None, kind=float, label="Learning rate", noun="learning rate", min=1e-7, max=10.0, widget="number",
        step=1e-5, format="%.1e", section="training", per_arch={"fc": 1e-5, "cnn/seed": 1e-5, "cnn/corrected": 1e-3, "segment": 5e-3},
        short="lr {value:g}", sweep=Sweep("1e-5,1e-4,1e-3", log=True), column=Column("lr", 60, "%.0e"),
        help="Step size of each update. The course uses 1e-5 with Adam: slow but steady. Too large and the loss "
             "jumps or diverges; too small and nothing moves in the time you have (the course CNN's problem).")
    optimizer: str = knob(
        "adam", kind=str, label="Optimizer", noun="optimizer", widget="select", section="training",
        **_choices({"adam": "Adam", "sgd": "SGD + momentum"}), short="{label}", step_cost="{value}",
        help="Adam adapts a step size per weight (the course's choice). SGD with momentum is the classic: "
             "one global step size, with momentum smoothing the direction over batches.")
    momentum: float = knob(  # SGD only
        0.9, kind=float, label="SGD momentum", noun="momentum", min=0.0, max=0.999, widget="slider", step=0.01,
        format="%.3g", section="training", when=("optimizer", ("sgd",)), short="momentum {value}",
        help="How much of the previous update SGD keeps: 0 is plain SGD; 0.9 (the classic value) averages "
             "the direction over about ten batches, which smooths the noise of small batches.")
    l2: float | None = knob(
        None, kind=float, label="L2 weight decay", noun="L2", min=0.0, max=1.0, widget="number", step=1e-4,
        format="%.1e", section="training", per_arch={"fc": 0.0, "cnn/seed": 1e-2, "cnn/corrected": 1e-4, "segment": 0.0},
        short="L2 {value:g}",
        help="Weight decay: adds λ·Σw² to the loss so weights stay small. Too strong and it overwhelms the data "
             "term (the course CNN's 1e-2 on every conv).")
    seed: int = knob(
        0, kind=int, label="Random seed", noun="seed", min=0, max=2**31 - 1, widget="number", step=1,
        section="training", short="seed {value}", preset_free=True, column=Column("seed", 50),
        help="Random seed for weight initialisation, dropout and shuffling: the same seed and settings give "
             "the same run. Change it to see how much results vary by chance alone.")
    limit_train: int | None = knob(  # use only N training patches (quick CNN runs)
        None, kind=int, label="Use N training patches (0 = all)", noun="limit-train", min=1, max=10_000_000,
        widget="number", step=500, off=0, section="training", summary=False, short="{value} patches",
        preset_free=True, sweep=Sweep("500,2000,8000", label="training-set size", log=True),
        help="Train on only this many patches (0 = all). A quick way to try the CNN in class: "
             "2,000 patches take a fifth of the time.")
    lr_schedule: str = knob(
        "constant", kind=str, label="Learning-rate schedule", noun="lr schedule", widget="select",
        section="training", **_choices({"constant": "Constant", "cosine": "Cosine decay to 0",
                                        "warmup_cosine": "Warm-up, then cosine"}), short="{label}",
        help="Cosine: the learning rate starts at the value above and decays smoothly to 0 by the last "
             "epoch, so the final weights are not a snapshot of a still-jumping run. Warm-up, then cosine: "
             "it first climbs from a tenth of that value over the first tenth of the steps (at least one "
             "epoch), so a large rate does not throw fresh batch-norm statistics off, then decays.")
    # ---- the U-Net (arch segment: whole films and their label maps, course Part 3) ----
    input_size: int = knob(
        128, kind=int, label="Input size (px the U-Net works at)", noun="input size", min=16, max=FILM,
        widget="number", step=16, when=("arch", ("segment",)), short="input {value}",
        step_cost="in{value}", sweep=Sweep("64,128,256", log=False), column=Column("input", 50),
        help="The 256×256 film is shrunk to this size before the network sees it, and its map grown back "
             "to 256×256. 128 keeps the anatomy's shapes at a quarter of the work of 256; 64 trains in "
             "seconds but blurs the thin clavicles.")
    depth: int = knob(
        4, kind=int, label="Depth (halvings)", noun="depth", min=1, max=6, widget="slider", step=1,
        when=("arch", ("segment",)), short="depth {value}", step_cost="d{value}", sweep=Sweep("2,3,4"),
        column=Column("depth", 45),
        help="How many times the encoder halves the map (each level: two 3×3 convs, then a 2×2 pool). "
             "Depth 4 on a 128×128 input ends at 8×8 in the bottleneck, where one pixel sees most of the "
             "chest: the context a 32×32 patch never has. The input size must be divisible by 2^depth.")
    base_filters: int = knob(
        16, kind=int, label="Base filters", noun="base filters", min=1, max=128, widget="number",
        step=4, when=("arch", ("segment",)), short="{value} base filters",
        step_cost="f{value}", sweep=Sweep("4,8,16", log=False), column=Column("base", 45),
        help="Filters of the first level; each deeper level doubles them (16, 32, 64, 128, then 256 in "
             "the bottleneck). Doubling them roughly quadruples parameters and work.")
    loss: str = knob(
        "both", kind=str, label="Loss", noun="loss", widget="radio", when=("arch", ("segment",)),
        **_choices({"crossentropy": "Cross-entropy", "dice": "Dice", "both": "Cross-entropy + Dice"}),
        short="{label} loss", column=Column("loss", 70),
        help="Cross-entropy grades every pixel alike, so the background (most of the film) dominates and "
             "the thin clavicles hardly count. Dice measures the overlap of each class's predicted and true "
             "area, one number per class, so a small class counts as much as a large one. Both: their sum.")
    augment: bool = knob(
        False, kind=bool, label="Augmentation (shift, scale, rotate, contrast)", noun="augmentation",
        widget="checkbox", when=("arch", ("segment",)), short="augmentation {value}", section="training",
        help="Every training film (and its label map) is shifted by up to 6 %, scaled by up to 8 %, rotated "
             "by up to 5° and its contrast and gamma changed a little, afresh each epoch: 150 films look "
             "like many more, and the network learns the anatomy rather than these films.")
    data: str = knob(  # phantom | folder path | .zip path; the sidebar's Data section and --data set it
        "phantom", kind=str, label="Data", noun="data", flag=False, preset_free=True)

    # ---- defaults and validation -------------------------------------------------
    def resolved(self) -> "RunConfig":
        """A copy with every None replaced by the architecture's default, checked against the
        table's ranges. Cost caps are the edges' job (validate(): sidebar, links, CLI), so
        the engine still runs a config it was handed and a stored record stays readable."""
        self.validate(caps=False)
        defaults = arch_defaults(self.arch, self.cnn_mode)
        return dataclasses.replace(
            self, filters=tuple(int(f) for f in self.filters),
            **{k: (defaults[k] if getattr(self, k) is None else float(getattr(self, k))) for k in defaults})

    def validate(self, caps: bool = True) -> "RunConfig":
        """Every knob within the table's range; with caps, also within this server's cost caps.
        Whatever a user typed, linked or passed on the command line goes through here."""
        for name in KNOBS:
            _check(name, getattr(self, name), caps)
        if self.arch == "segment":
            _check_unet_shape(self.input_size, self.depth)
        if caps:
            from xray_core.cost import cost  # arithmetic only: a huge model is refused before anything builds it
            for name, value in cost(step_cost_view(self)).items():   # the step-cost knobs are all it may read
                if value > cap(name):
                    raise _over_cap(name, value)
        return self

    # ---- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        unknown = sorted(set(d) - set(KNOBS))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        d = dict(d)
        if "filters" in d and d["filters"] is not None:
            d["filters"] = parse_filters(d["filters"])
        return cls(**d).validate(caps=False)  # records and worker transport: validated where they came in

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_query(self) -> dict[str, str]:
        """Only the fields that differ from the defaults, as strings (for st.query_params)."""
        base = RunConfig()
        return {name: to_text(getattr(self, name)) for name in KNOBS
                if getattr(self, name) != getattr(base, name)}

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "RunConfig":
        """Parse a query string dict; unknown keys are ignored, bad values raise ConfigError."""
        return cls(**{name: parse_text(name, str(raw)) for name, raw in q.items() if name in KNOBS}).validate()


KNOBS: dict[str, Knob] = {f.name: f.metadata["knob"] for f in fields(RunConfig)}
_NONE_WORDS = ("", "none", "None", "auto")


def arch_defaults(arch: str, cnn_mode: str = "seed") -> dict[str, Any]:
    """The per-architecture defaults (lr, l2, dropout) of fc, cnn/seed or cnn/corrected."""
    if arch == "segment":
        key = "segment"
    else:
        key = "fc" if arch != "cnn" else f"cnn/{cnn_mode if cnn_mode in KNOBS['cnn_mode'].choices else 'seed'}"
    return {name: k.per_arch[key] for name, k in KNOBS.items() if k.per_arch}


def applies(name: str, values: Any) -> bool:
    """Whether a knob is used with these other settings (alpha only for LeakyReLU, the head
    dropout only for a CNN in corrected mode, ...). `values` is a RunConfig or a mapping
    such as st.session_state or a stored record's config (a missing knob counts as its default)."""
    when = KNOBS[name].when
    if when is None:
        return True
    if isinstance(values, RunConfig):
        other = getattr(values, when[0])
    else:
        other = values[when[0]] if when[0] in values else getattr(RunConfig(), when[0])
    return other in when[1] and applies(when[0], values)   # and the knob it depends on is used


# ---- what else each knob is (derived from the flags, never from a list of names) ----------

STEP_COST_KNOBS = tuple(n for n, k in KNOBS.items() if k.step_cost)
PRESET_FREE_KNOBS = tuple(n for n, k in KNOBS.items() if k.preset_free)
COLUMN_KNOBS = tuple(n for n, k in KNOBS.items() if k.column)


def step_cost_view(config: RunConfig) -> Any:
    """The config's step-cost knobs and nothing else: what the cost caps (cost.py) read, so a
    knob that changes the model's size but is not flagged fails loudly instead of being missed."""
    from types import SimpleNamespace
    return SimpleNamespace(**{n: getattr(config, n) for n, k in KNOBS.items() if k.step_cost})


def step_cost_parts(config: RunConfig) -> list[str]:
    """The estimates' cache key of a resolved config, part by part: each step-cost knob the
    config uses, in table order, the knobs every architecture uses first (so the keys of
    calibrations already on disk stay the same, e.g. "fc/relu/bs64/adam/nobn")."""
    used = [n for n, k in KNOBS.items() if k.step_cost and applies(n, config)]
    parts = []
    for n in [n for n in used if KNOBS[n].when is None] + [n for n in used if KNOBS[n].when is not None]:
        k, v = KNOBS[n], getattr(config, n)
        if k.step_cost_default_silent and v == getattr(RunConfig(), n):
            continue
        if k.kind is bool:
            parts.append(k.step_cost if v else "no" + k.step_cost)
        else:
            parts.append(k.step_cost.format(value="-".join(map(str, v)) if k.kind is tuple else to_text(v)))
    return parts


def sweeps() -> dict[str, tuple[str, Sweep]]:
    """Every sweepable knob by its sweep name, in table order: (the knob it changes, its Sweep
    with label and kind filled in from the knob's row)."""
    out = {}
    for n, k in KNOBS.items():
        if k.sweep:
            s = k.sweep
            out[s.name or n] = (n, dataclasses.replace(s, name=s.name or n, label=s.label or k.noun,
                                                      kind=s.kind or k.kind))
    return out


def column_cells(config: dict) -> dict[str, Any]:
    """The runs table's knob columns of a stored run's config (a dict), in table order:
    {column title: value}; blank ("" for text, None otherwise) where the knob is not used."""
    cells = {}
    for n, k in KNOBS.items():
        if not k.column:
            continue
        v = config.get(n)
        text = k.kind in (str, tuple)
        if not applies(n, config):
            v = "" if text else None
        elif k.kind is tuple:
            v = ",".join(map(str, v or ()))
        cells[k.column.title] = v
    return cells


# ---- the anatomy map's knobs (Classify page, `classify`) -------------------------------------

@dataclass(frozen=True)
class MapConfig:
    """How the Classify page and `classify` draw an anatomy map: not part of a training run."""
    stride: int = knob(
        4, kind=int, label="Stride (px between patch centres)", noun="stride", min=1, max=PATCH,
        widget="slider", step=1,
        help="At film scale (256 px). 4 classifies 64×64 = 4,096 patches; 1 classifies every "
             "pixel's patch (65,536): finer edges, 16× the work.")
    method: str = knob(
        "dense", kind=str, label="Map method", noun="method", **_choices({"dense": "dense", "patches": "patches"}),
        help="dense: one pass of a CNN over the film (falls back to patches, with a note, "
             "for models that cannot); patches: every patch on its own")


MAP_KNOBS: dict[str, Knob] = {f.name: f.metadata["knob"] for f in fields(MapConfig)}


def map_default(name: str) -> Any:
    return getattr(MapConfig(), name)


def bounds(name: str) -> tuple[Any, Any]:
    """The knob's inclusive range, with this server's cap as the maximum of a capped knob."""
    k = KNOBS[name]
    return k.min, (cap(k.cap) if k.cap else k.max)


def _range_text(k: Knob, lo: Any, hi: Any) -> str:
    if hi is None:
        return f">= {lo:g}"
    return f"from {lo:,} to {hi:,}" if k.kind is int else f"from {lo:g} to {hi:g}"


def _check_unet_shape(input_size: int, depth: int) -> None:
    """The U-Net's shape rules (segmentation.check_knobs says the same): the input size divides
    the film (the film is shrunk by a whole factor) and can be halved `depth` times."""
    if FILM % input_size:
        raise ConfigError(f"input size {input_size} must divide the film size {FILM} "
                          f"(e.g. {FILM // 2} or {FILM // 4})")
    if input_size % (2 ** depth):
        raise ConfigError(f"input size {input_size} cannot be halved {depth} times "
                          f"(depth {depth} needs a multiple of {2 ** depth})")


def _check(name: str, v: Any, caps: bool) -> None:
    k = KNOBS[name]
    if v is None and (k.per_arch or k.off is not None):
        return
    if k.choices:
        if v not in k.choices:
            raise ConfigError(f"unknown {k.noun} {v!r}: choose one of {', '.join(k.choices)}")
        return
    if k.kind is str:
        if not isinstance(v, str) or not v:
            raise ConfigError(f"{k.noun} must be 'phantom', a folder or a .zip path")
        return
    if k.kind is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{k.noun} must be true or false, got {v!r}")
        return
    lo, hi = k.min, k.max
    if k.kind is tuple:
        if not isinstance(v, (tuple, list)) or len(v) != 5:
            raise ConfigError(f"the CNN needs exactly five filter counts, got {_fmt_filters(v)}")
        if not all(_is_int(f) and lo <= f <= hi for f in v):
            raise ConfigError(f"filter counts must be whole numbers from {lo} to {hi}, got {_fmt_filters(v)}")
        return
    if k.kind is int:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            shown_hi = cap(k.cap) if k.cap and caps else hi
            raise ConfigError(f"{k.noun} must be a whole number {_range_text(k, lo, shown_hi)}, got {v}")
        if k.cap and caps and v > cap(k.cap):
            raise _over_cap(k.cap, v)
        return
    if not _finite(v) or not lo <= v <= hi:
        raise ConfigError(f"{k.noun} must be a number {_range_text(k, lo, hi)}, got {v}")


# ---- text form (URL query, CLI, widgets) -----------------------------------------

def parse_text(name: str, raw: str) -> Any:
    """One knob's value from text, as the table types it (ConfigError if unreadable)."""
    k = KNOBS[name]
    try:
        if (k.per_arch or k.off is not None) and raw.strip() in _NONE_WORDS:
            return None
        if k.kind is tuple:
            return parse_filters(raw)
        if k.kind is bool:
            word = raw.strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if k.kind in (int, float):
            return k.kind(raw)
        return raw
    except ConfigError:     # already says what is wrong and what to type (the filters)
        raise
    except (ValueError, TypeError):
        raise ConfigError(f"{name}: cannot read {raw!r}") from None


def parse_filters(value: Any) -> tuple[int, ...]:
    """'64,128,128,256,256' or a list -> tuple of five ints (ConfigError otherwise)."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
    else:
        parts = list(value)
    try:
        out = tuple(int(p) for p in parts)
    except (ValueError, TypeError):
        raise ConfigError(f"filters must be five whole numbers like 64,128,128,256,256, got {value!r}") from None
    _check("filters", out, caps=False)
    return out


def to_text(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return ",".join(str(x) for x in v)
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


def _fmt_filters(f: Any) -> str:
    try:
        return ",".join(str(x) for x in f)
    except TypeError:
        return repr(f)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Kept for the modules that import the choice lists by name.
ARCHS = KNOBS["arch"].choices
ACTIVATIONS = KNOBS["activation"].choices
OPTIMIZERS = KNOBS["optimizer"].choices
CNN_MODES = KNOBS["cnn_mode"].choices
