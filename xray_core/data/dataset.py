"""The one in-memory dataset shape every source produces.

float32 images N×32×32×1 in [0, 1], int labels 0..3 (background, clavicle, lung,
heart), and up to three splits: train / validation / test. `groups` carries the
radiograph id of each patch so splits made here never mix one film's patches.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xray_core import CLASSES
from xray_core.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    x: np.ndarray                      # float32, (N, 32, 32, 1), values in [0, 1]
    y: np.ndarray                      # int64, (N,), 0..3
    groups: np.ndarray | None = None   # radiograph id per patch (str), if known

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def class_counts(self) -> list[int]:
        return np.bincount(self.y, minlength=len(CLASSES)).astype(int).tolist()

    def take(self, n: int, seed: int = 0) -> "Split":
        """A deterministic, class-stratified-by-shuffle subset of n patches."""
        if n >= len(self):
            return self
        idx = np.random.default_rng(seed).permutation(len(self))[:n]
        idx.sort()
        return Split(self.x[idx], self.y[idx], None if self.groups is None else self.groups[idx])


@dataclass
class Dataset:
    name: str
    splits: dict[str, Split]
    warnings: list[str] = field(default_factory=list)

    def has(self, split: str) -> bool:
        return split in self.splits and len(self.splits[split]) > 0

    def split(self, name: str) -> Split:
        if not self.has(name):
            have = ", ".join(s for s in SPLITS if self.has(s)) or "none"
            raise DataError(f"{self.name}: has no '{name}' split (it has: {have})")
        return self.splits[name]

    def summary(self) -> dict:
        """Sizes and class balance per split, for the UI and the CLI."""
        return {
            s: {"n": len(self.splits[s]), "per_class": dict(zip(CLASSES, self.splits[s].class_counts()))}
            for s in SPLITS if s in self.splits
        }
