"""Lung fields and heart drawn from a shape model of the real train label maps.

`shapes.npz` (scripts/derive_phantom_shapes.py) holds the mean and the first 12
principal modes of the signed distance maps (64x64) to the lung fields and to the heart
of the 150 jsrt_films/train label maps: the SCR study's point-distribution model, on
distance maps. A film's shapes are mean + sum(z_k * sd_k * mode_k) with its own z, cut
at zero: lungs that narrow to real costophrenic angles, domes, a heart that sits where
real hearts sit against them -- the relations a drawn ellipse and two edge curves got
wrong (phantom v32: lung under the heart, lungs meeting over it).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from scipy import ndimage

from xray_core import FILM

N_MODES = 12


@functools.lru_cache(maxsize=1)
def _model() -> tuple[np.ndarray, np.ndarray, int]:
    with np.load(Path(__file__).with_name("shapes.npz")) as z:
        mean = z["mean"].astype(np.float32)
        modes = z["modes"].astype(np.float32) * z["sd"].astype(np.float32)[:, None]
        return mean, modes, int(z["side"])


def sample_z(rng: np.random.Generator) -> np.ndarray:
    """One film's shape: a z per mode, clipped at 2 sd so no film is absurd."""
    return np.clip(rng.standard_normal(N_MODES), -2, 2)


def _largest(mask: np.ndarray, n: int) -> list[np.ndarray]:
    comp, k = ndimage.label(mask)
    if k == 0:
        return []
    sizes = ndimage.sum(mask, comp, range(1, k + 1))
    return [comp == (i + 1) for i in np.argsort(sizes)[::-1][:n]]


def masks(z: np.ndarray) -> dict:
    """{'lung_r' (image left), 'lung_l' (image right), 'heart'}: bool FILM x FILM."""
    mean, modes, side = _model()
    sdf = (mean + z[:len(modes)] @ modes).reshape(2, side, side)
    up = [ndimage.zoom(s, FILM / side, order=1, grid_mode=True, mode="nearest") < 0 for s in sdf]
    lungs = sorted(_largest(up[0], 2), key=lambda m: np.nonzero(m)[1].mean())
    if len(lungs) == 1:                      # the two fields touched: part them at the midline
        cols = np.arange(FILM)[None, :] < FILM // 2
        lungs = [lungs[0] & cols, lungs[0] & ~cols]
    heart = _largest(up[1], 1)
    return {"lung_r": lungs[0], "lung_l": lungs[1],
            "heart": heart[0] if heart else np.zeros((FILM, FILM), bool)}


def edges(mask: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Apex and base heights and the (left, right) edge x at 9 heights, as fractions:
    what `anatomy` keeps for a drawn lung (the density uses them)."""
    rows = np.nonzero(mask.any(1))[0]
    y0, y1 = rows[0] / FILM, (rows[-1] + 1) / FILM
    prof = []
    for t in np.linspace(0.05, 0.95, 9):
        r = mask[min(int((y0 + t * (y1 - y0)) * FILM), FILM - 1)]
        xs = np.nonzero(r)[0]
        prof.append([xs[0] / FILM, (xs[-1] + 1) / FILM] if len(xs) else [np.nan, np.nan])
    prof = np.array(prof)
    ok = ~np.isnan(prof[:, 0])
    for j in range(2):
        prof[:, j] = np.interp(np.arange(9), np.nonzero(ok)[0], prof[ok, j])
    return y0, y1, prof
