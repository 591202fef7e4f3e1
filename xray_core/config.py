"""RunConfig: the one typed, serialisable description of a training run.

The sidebar, the presets, the CLI, the URL query string and the saved run record
all speak it (like tensorflow/playground's state.ts). Fields left as None mean
"the architecture's default" and are filled by `resolved()`, so a CNN switched to
corrected mode gets settings that train unless the student overrides them.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import ConfigError

ARCHS = ("fc", "cnn")
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "elu")
OPTIMIZERS = ("adam", "sgd")
CNN_MODES = ("seed", "corrected")
LR_SCHEDULES = ("constant", "cosine")
DEFAULT_FILTERS = (64, 128, 128, 256, 256)

# The course's settings (seed) vs settings that let the same CNN learn (corrected).
_DEFAULTS = {
    # arch/mode: (lr, l2, dropout)
    "fc": (1e-5, 0.0, 0.0),
    "cnn/seed": (1e-5, 1e-2, 0.3),
    "cnn/corrected": (1e-3, 1e-4, 0.2),
}


@dataclass(frozen=True)
class RunConfig:
    arch: str = "fc"
    activation: str = "relu"
    alpha: float = 0.01            # LeakyReLU negative slope
    epochs: int = 25
    batch_size: int = 64
    lr: float | None = None        # None: 1e-5 (course), 1e-3 for the corrected CNN
    optimizer: str = "adam"
    momentum: float = 0.9          # SGD only
    batch_norm: bool = False       # FC only; the CNN always has its batch norm layers
    dropout: float | None = None   # None: 0 for FC, 0.3 for the course CNN
    filters: tuple[int, ...] = DEFAULT_FILTERS
    cnn_mode: str = "seed"
    l2: float | None = None        # None: 0 for FC, 1e-2 on the course CNN's convs
    seed: int = 0
    data: str = "phantom"          # phantom | folder path | .zip path
    limit_train: int | None = None  # use only N training patches (quick CNN runs)
    lr_schedule: str = "constant"  # cosine: lr decays to 0 over the run (last epochs stop jittering)

    # ---- defaults and validation -------------------------------------------------
    def _key(self) -> str:
        return "fc" if self.arch == "fc" else f"cnn/{self.cnn_mode}"

    def resolved(self) -> "RunConfig":
        """A copy with every None replaced by the architecture's default, validated."""
        self.validate()
        lr, l2, dropout = _DEFAULTS[self._key()]
        return dataclasses.replace(
            self,
            lr=lr if self.lr is None else float(self.lr),
            l2=l2 if self.l2 is None else float(self.l2),
            dropout=dropout if self.dropout is None else float(self.dropout),
            filters=tuple(int(f) for f in self.filters),
        )

    def validate(self) -> "RunConfig":
        def bad(msg: str) -> ConfigError:
            return ConfigError(msg)

        if self.arch not in ARCHS:
            raise bad(f"unknown architecture {self.arch!r}: choose one of {', '.join(ARCHS)}")
        if self.activation not in ACTIVATIONS:
            raise bad(f"unknown activation {self.activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad(f"unknown lr schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}")
        if self.cnn_mode not in CNN_MODES:
            raise bad(f"unknown CNN mode {self.cnn_mode!r}: choose seed or corrected")
        if not _finite(self.alpha) or not 0 <= self.alpha < 1:
            raise bad(f"alpha must be in [0, 1), got {self.alpha}")
        if not _is_int(self.epochs) or self.epochs < 1 or self.epochs > 1000:
            raise bad(f"epochs must be a whole number from 1 to 1000, got {self.epochs}")
        if not _is_int(self.batch_size) or self.batch_size < 1 or self.batch_size > 65536:
            raise bad(f"batch size must be a whole number from 1 to 65536, got {self.batch_size}")
        if self.lr is not None and (not _finite(self.lr) or self.lr <= 0 or self.lr > 10):
            raise bad(f"learning rate must be a positive finite number (at most 10), got {self.lr}")
        if not _finite(self.momentum) or not 0 <= self.momentum < 1:
            raise bad(f"momentum must be in [0, 1), got {self.momentum}")
        if self.dropout is not None and (not _finite(self.dropout) or not 0 <= self.dropout < 1):
            raise bad(f"dropout must be in [0, 1), got {self.dropout}")
        if self.l2 is not None and (not _finite(self.l2) or not 0 <= self.l2 <= 1):
            raise bad(f"L2 must be in [0, 1], got {self.l2}")
        if not isinstance(self.filters, (tuple, list)) or len(self.filters) != 5:
            raise bad(f"the CNN needs exactly five filter counts, got {_fmt_filters(self.filters)}")
        if not all(_is_int(f) and 1 <= f <= 2048 for f in self.filters):
            raise bad(f"filter counts must be whole numbers from 1 to 2048, got {_fmt_filters(self.filters)}")
        if not _is_int(self.seed) or not 0 <= self.seed < 2**31:
            raise bad(f"seed must be a whole number from 0 to 2147483647, got {self.seed}")
        if self.limit_train is not None and (not _is_int(self.limit_train) or self.limit_train < 1):
            raise bad(f"limit-train must be a whole number >= 1, got {self.limit_train}")
        if not isinstance(self.data, str) or not self.data:
            raise bad("data must be 'phantom', a folder or a .zip path")
        return self

    # ---- serialisation -----------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        d = dict(d)
        if "filters" in d and d["filters"] is not None:
            d["filters"] = parse_filters(d["filters"])
        return cls(**d).validate()

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    def to_query(self) -> dict[str, str]:
        """Only the fields that differ from the defaults, as strings (for st.query_params)."""
        base = RunConfig()
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != getattr(base, f.name):
                out[f.name] = _to_str(v)
        return out

    @classmethod
    def from_query(cls, q: dict[str, str]) -> "RunConfig":
        """Parse a query string dict; unknown keys are ignored, bad values raise ConfigError."""
        kw: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, raw in q.items():
            if name not in types:
                continue
            kw[name] = _parse_field(name, str(raw))
        return cls(**kw).validate()


def _parse_field(name: str, raw: str) -> Any:
    try:
        if name in ("epochs", "batch_size", "seed"):
            return int(raw)
        if name == "limit_train":
            return None if raw in ("", "none", "None") else int(raw)
        if name in ("alpha", "momentum"):
            return float(raw)
        if name in ("lr", "dropout", "l2"):
            return None if raw in ("", "none", "None", "auto") else float(raw)
        if name == "batch_norm":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if name == "filters":
            return parse_filters(raw)
        return raw
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
    if len(out) != 5:
        raise ConfigError(f"the CNN needs exactly five filter counts, got {len(out)}: {value!r}")
    if any(f < 1 or f > 2048 for f in out):
        raise ConfigError(f"filter counts must be whole numbers from 1 to 2048, got {value!r}")
    return out


def _to_str(v: Any) -> str:
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
