"""What a phantom film shows: anatomy, label map and tissue density (`phantom.py` films it).

`sample_anatomy(rng)` draws a few numbers per film: the lungs' and heart's shape (a point
in the shape model of the real train label maps, `shapes.py`), the clavicles around the
values measured on them (`stats.py`), body and exposure; `label_map(a)` paints lungs,
heart and clavicles (0 background, 1 clavicle, 2 lung, 3 heart); `density(a, masks, labels, rng)` is how
much tissue the beam crosses at each pixel (larger = whiter on the film). Change the
drawing here -> bump `phantom.GENERATOR_VERSION` so stale caches are not reused.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from xray_core import FILM
from xray_core.data.phantom import shapes
from xray_core.data.phantom import stats as S
__all__ = ["sample_anatomy", "label_map", "density"]

# Pixel-centre coordinates as fractions of the film side (x to the right, y down).
_Y, _X = (np.mgrid[0:FILM, 0:FILM].astype(np.float32) + 0.5) / FILM


# ---------------------------------------------------------------------------------
# Anatomy: a few random numbers per film, drawn around the measured real values.
# ---------------------------------------------------------------------------------
def _jitter(rng: np.random.Generator, stat: tuple, scale: float = 1.0) -> np.ndarray:
    """Draw around a measured (mean, std) pair, clipped at 2 std so no film is absurd."""
    mean, std = np.asarray(stat[0], float), np.asarray(stat[1], float)
    return mean + scale * std * np.clip(rng.standard_normal(mean.shape), -2, 2)


def sample_anatomy(rng: np.random.Generator) -> dict:
    a: dict = {}
    a["shape"] = shapes.sample_z(rng)                          # lungs and heart: the shape model
    a["clav_r"] = _jitter(rng, S.CLAV_R, 0.8)
    a["clav_l"] = _jitter(rng, S.CLAV_L, 0.8)
    a["mid"] = rng.normal(0.5, 0.008)                          # spine / midline x
    a["body_w"] = rng.normal(0.45, 0.015)                      # half-width of the chest
    a["waist"] = rng.uniform(0.02, 0.1)                        # narrowing at the bottom
    a["arm_low"] = rng.uniform(0.45, 0.8, 2)                   # where the arms end
    a["n_ribs"] = int(rng.integers(9, 12))
    a["rib_phase"] = rng.uniform(0, 1)
    a["bubble"] = rng.random() < 0.6                          # gastric air bubble
    a["marker"] = rng.random() < 0.5                          # black ID marker, top corner
    a["breast"] = rng.uniform(0, 0.15)                        # soft-tissue over lower lungs
    return a


# ---------------------------------------------------------------------------------
# Masks: lungs, heart, clavicles -> the label map.
# ---------------------------------------------------------------------------------
def _clavicle_centre(box: np.ndarray, right: bool):
    """The clavicle's centre line y(x): nearly level over the lung, curving down at its
    medial end (as on the real train films; a straight slope from corner to corner of the
    box made them far steeper than real ones)."""
    x0, x1, y0, y1 = box
    width = 0.048
    # Medial end is the lower end; the bone continues laterally out to the shoulder.
    med_x, lat_x = (x1, x0) if right else (x0, x1)
    med_y, lat_y = y1 - width / 2, y0 + width / 2

    def yc(x):
        s = (x - med_x) / (lat_x - med_x)                      # 0 medial, 1 lateral end of label
        u = np.clip(s, 0, 1)
        return lat_y + (med_y - lat_y) * (1 - u) ** 2 - 0.03 * np.clip(s - 1, 0, None)
    return yc, med_x, lat_x, width


def _clavicle_label(box: np.ndarray, right: bool) -> np.ndarray:
    yc, med_x, lat_x, width = _clavicle_centre(box, right)
    lo, hi = min(med_x, lat_x), max(med_x, lat_x)
    taper = np.where(np.abs(_X - med_x) < 0.04, 1.15, 1.0)     # thicker medial head
    return (np.abs(_Y - yc(_X[:1])) <= width / 2 * taper) & (_X >= lo) & (_X <= hi)


def label_map(a: dict) -> tuple[np.ndarray, dict]:
    """Lungs and heart from the shape model of the real label maps (phantom/shapes.py),
    clavicles drawn over the lungs; `a` gets each lung's apex, base and edges (the density
    uses them). Returns the label map and the masks the density needs."""
    m = shapes.masks(a["shape"])
    # The heart sits on the diaphragm: no lung under it. (Real train label maps: a median
    # of 30 lung pixels below the heart; drawn phantoms up to v32 ran the lungs on under
    # it, 280, and a model trained on them missed real hearts.)
    under = (np.cumsum(m["heart"], 0) > 0) & ~m["heart"]
    for key in ("lung_r", "lung_l"):
        m[key] = m[key] & ~under
        a[key] = shapes.edges(m[key])
    lungs = m["lung_r"] | m["lung_l"]
    clav = _clavicle_label(a["clav_r"], True) | _clavicle_label(a["clav_l"], False)
    labels = np.zeros((FILM, FILM), np.uint8)
    labels[lungs] = 2
    labels[clav & ndimage.binary_dilation(lungs, iterations=3)] = 1   # clavicle over lung
    labels[m["heart"]] = 3                                             # heart over lung
    # The lungs wrap behind the heart: their air runs on under its border (real heart
    # rims are greyer than its core: 0.68 against 0.81 on the train films).
    for key in ("lung_r", "lung_l"):
        m[key] = m[key] | (m["heart"] & ndimage.binary_dilation(m[key], iterations=12))
    return labels, m


# ---------------------------------------------------------------------------------
# Density: soft tissue, air, heart, bone, vessels. Larger = whiter on the film.
# ---------------------------------------------------------------------------------
def _smooth(mask: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(mask.astype(np.float32), sigma)


def _body(a: dict) -> np.ndarray:
    """Soft-tissue thickness: the trunk (an elliptic cross-section per row, narrowing
    to the neck at the top and the waist at the bottom) plus the arms beside the
    upper chest, with air between arm and waist and outside the body."""
    mid = a["mid"]
    y = _Y[:, 0]
    w = a["body_w"] - 0.28 * np.clip((0.07 - y) / 0.07, 0, 1) ** 0.7 \
        - a["waist"] * np.clip((y - 0.6) / 0.4, 0, 1) ** 1.5
    u = (_X - mid) / w[:, None]
    trunk = np.clip(1 - u ** 2, 0, 1) ** 0.5
    # Arms: from the film edge inwards, down to an armpit height that differs per side.
    arms = np.zeros_like(trunk)
    for side, low in ((-1, a["arm_low"][0]), (1, a["arm_low"][1])):
        reach = np.clip(1 - ((y - 0.05) / (low - 0.05)) ** 4, 0, 1) * 0.12  # arm width
        dist = (0.5 + side * (_X - 0.5)) - (1 - reach[:, None])            # >0 inside arm
        arms += np.clip(dist / 0.03, 0, 1) * 0.6
    # Thinner at the neck and upper chest than over the abdomen.
    trunk = trunk * (0.72 + 0.28 * np.clip((y - 0.1) / 0.5, 0, 1))[:, None]
    return np.maximum(trunk, arms)


def _air_in_lungs(m: dict, a: dict) -> np.ndarray:
    """How much air the beam crosses: deep in the middle of each lung, thin at its
    edges and in the apex (the lung narrows there, neck and shoulder tissue overlap)."""
    air = np.zeros((FILM, FILM), np.float32)
    for key in ("lung_r", "lung_l"):
        y0, y1, _ = a[key]
        # Distance transforms on the lung's bounding box only (1 px margin): cheap.
        rows, cols = np.nonzero(m[key].any(1))[0], np.nonzero(m[key].any(0))[0]
        box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        mask, yy = m[key][box], _Y[box]
        # The diaphragm meets the beam edge-on: the lung base is a sharp edge, the
        # sides and the apex fade in. Lower half: vertical distances count more.
        d_iso = ndimage.distance_transform_edt(mask)
        d_base = ndimage.distance_transform_edt(mask, sampling=(3.0, 1.0))
        d_apex = ndimage.distance_transform_edt(mask, sampling=(0.4, 1.0))
        w = np.clip((yy - (y0 + y1) / 2) / ((y1 - y0) / 2), 0, 1)
        w_top = np.clip(1 - 2 * (yy - y0) / (y1 - y0), 0, 1) ** 2
        d = (d_base * w + d_apex * w_top + d_iso * (1 - w - w_top)) / FILM
        apex = 0.85 + 0.15 * np.clip((yy - y0) / (0.3 * (y1 - y0)), 0, 1)
        # Real lungs: sharp and dark at the mediastinum, greyer towards the chest wall
        # (measured on train films: 0-3 px inside the medial border ~0.48, the lateral
        # ~0.66). t: 0 at the lateral edge of each row, 1 at the medial edge.
        xs = np.arange(mask.shape[1])[None, :]
        has = mask.any(1)[:, None]
        first = np.where(has, np.argmax(mask, 1)[:, None], 0)
        last = np.where(has, mask.shape[1] - 1 - np.argmax(mask[:, ::-1], 1)[:, None], 1)
        t = np.clip((xs - first) / np.maximum(last - first, 1), 0, 1)
        if key == "lung_l":                      # image-right lung: lateral edge is the last
            t = 1 - t
        scale = 0.04 - 0.032 * t                 # air sets in within ~2 px medially
        air[box] += (1 - np.exp(-d / scale)) * apex * (0.55 + 0.45 * t)
    return _smooth(air, 1.0)


def _heart_cover(m: dict) -> np.ndarray:
    d = ndimage.distance_transform_edt(m["heart"]) / FILM
    return _smooth(1 - np.exp(-d / 0.012), 0.8)


def _mediastinum(a: dict, rng: np.random.Generator) -> np.ndarray:
    """Spine with vertebrae, the mediastinal soft tissue around it, the dark trachea.
    Built from 1-D profiles (x and y separately) because that is all it needs."""
    x, y = _X[0] - a["mid"], _Y[:, 0]
    spine = np.exp(-(x / 0.055) ** 4)
    period = rng.uniform(0.035, 0.045)
    vertebrae = 0.5 + 0.5 * np.cos(2 * np.pi * (y / period + rng.uniform())) ** 2
    pedicles = np.exp(-((np.abs(x) - 0.03) / 0.012) ** 2) * 0.3 * spine
    trachea = np.exp(-(x / 0.018) ** 2)[None, :] * (np.clip((0.36 - y) / 0.1, 0, 1) * (y > 0.02))[:, None]
    # Mediastinum: narrow at the top (between the lung apices), wide at the heart.
    half = 0.05 + 0.04 * np.clip((y - 0.2) / 0.25, 0, 1)
    q = ((x[None, :] - 0.01) / half[:, None]).astype(np.float32) ** 2
    medi = np.exp(-q * q)
    # Through this windowing the spine is a faint column, not a bright stripe (the
    # bright vertical bands it used to make were read as "background" everywhere).
    out = 0.5 * medi + (0.5 * pedicles)[None, :] + 0.15 * vertebrae[:, None] * spine[None, :] \
        - 0.35 * trachea
    return _smooth(out, 2.0)


def _rib_band(dist: np.ndarray, half: float) -> np.ndarray:
    """Cross-section of a rib (or clavicle): a bright body, brighter cortical edges,
    a soft margin -- real ribs read as bands, not as pairs of thin lines."""
    r = np.abs(dist) / half
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    fade = np.clip(1 - (r - 1) / 0.25, 0, 1) ** 2               # soft outer edge, cheaply
    return np.where(r < 1, 0.7 + 0.3 * r8, fade)


def _rib_field(offset: np.ndarray, gap: np.ndarray, half: np.ndarray) -> np.ndarray:
    """All ribs of one kind at once: `offset` is the height above the first rib's
    centre line; the distance to the nearest centre line is the fractional part."""
    q = offset / gap
    return _rib_band((q - np.round(q)) * gap, half)


def _ribs(a: dict, rng: np.random.Generator) -> np.ndarray:
    """Posterior ribs (arcs from the spine, up then down laterally) and fainter
    anterior ribs (sloping down towards the middle), on both sides."""
    top = min(a["lung_r"][0], a["lung_l"][0]) - 0.03
    base = max(a["lung_r"][1], a["lung_l"][1])
    gap = (base - top) / a["n_ribs"]
    out = np.zeros((FILM, FILM), np.float32)
    for side in (-1, 1):
        s = np.clip((_X - a["mid"]) * side / 0.42, 0, 1.2)     # 0 at spine, 1 at chest wall
        first = top + (a["rib_phase"] - 0.5) * gap + rng.normal(0, 0.005)
        g = gap * (1 + 0.08 * s)                                # ribs fan out laterally
        # Posterior: rises a little off the spine then arcs down towards the chest wall.
        post = _Y - first - (-0.05 * s + 0.2 * s ** 2.2)
        out += _rib_field(post, g, 0.014 + 0.004 * s) * (s > 0.06) * (post > -gap / 2)
        # Anterior: starts high at the chest wall and runs down towards the middle.
        ant = _Y - first - 0.09 - 0.22 * (1 - s)
        out += 0.45 * _rib_field(ant, g, 0.018) * (s > 0.3) * (s < 1.05) * (ant > -gap / 2)
    return ndimage.gaussian_filter(out, 0.8)   # real rib margins are soft


def _clavicle_bone(a: dict) -> np.ndarray:
    out = np.zeros((FILM, FILM), np.float32)
    for key, right in (("clav_r", True), ("clav_l", False)):
        yc, med_x, lat_x, width = _clavicle_centre(a[key], right)
        # The bone runs from just past the medial label end out to the shoulder.
        ext = med_x + (lat_x - med_x) * np.array([-0.12, 2.0])
        lo, hi = ext.min(), ext.max()
        along = np.clip(np.minimum(_X - lo, hi - _X) / 0.02, 0, 1)
        out += _rib_band(_Y - yc(_X[:1]), width / 2 * 1.05) * along
    return out


def _shoulders(a: dict) -> np.ndarray:
    """Humeral heads and scapulae: dense, rounded, in the top corners."""
    mid = a["mid"]
    out = np.zeros((FILM, FILM), np.float32)
    for side in (-1, 1):
        cx = mid + side * (a["body_w"] + 0.02)
        out += 0.9 * (((_X - cx) / 0.08) ** 2 + ((_Y - 0.1) / 0.09) ** 2 < 1)
        # Scapula: a faint wedge over the upper lateral lung.
        sx = mid + side * (a["body_w"] - 0.07)
        out += 0.25 * np.exp(-((_X - sx - side * 0.03 * (0.4 - _Y)) / 0.05) ** 2) * (_Y > 0.1) * (_Y < 0.42)
    return _smooth(out, 2.0)


def _vessels(a: dict, m: dict, rng: np.random.Generator) -> np.ndarray:
    """Lung markings: branching vessels fanning out from each hilum, thick near it."""
    pts = np.zeros((FILM, FILM), np.float32)
    thin = np.zeros((FILM, FILM), np.float32)
    for key, side in (("lung_r", -1), ("lung_l", 1)):
        y0, y1, _ = a[key]
        hx = a["mid"] + side * rng.normal(0.1, 0.01)
        hy = y0 + rng.normal(0.5, 0.03) * (y1 - y0)
        n, steps = 60, 70
        ang = rng.uniform(-np.pi * 0.85, np.pi * 0.85, n)     # 0 = straight out laterally
        ang = np.where(side > 0, ang, np.pi - ang)
        drift = rng.normal(0, 0.06, (n, steps)).cumsum(1)
        step = 1.6 / FILM
        theta = ang[:, None] + drift
        px = hx * FILM + np.cumsum(np.cos(theta) * step * FILM, 1)
        py = hy * FILM + np.cumsum(np.sin(theta) * step * FILM, 1)
        w = np.exp(-np.arange(steps) / 30.0)[None, :] * rng.uniform(0.5, 1.0, (n, 1))
        ok = (px >= 0) & (px < FILM) & (py >= 0) & (py < FILM)
        ix, iy = px[ok].astype(int), py[ok].astype(int)
        wk = np.broadcast_to(w, (n, steps))[ok]
        near = np.broadcast_to(np.arange(steps) < 20, (n, steps))[ok]   # trunk vs branches
        np.add.at(pts, (iy[near], ix[near]), wk[near])
        np.add.at(thin, (iy[~near], ix[~near]), wk[~near])
    v = ndimage.gaussian_filter(pts, 1.3) * 1.2 + ndimage.gaussian_filter(thin, 0.6)
    return np.clip(v, 0, 1.5)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """Band-pass noise: the mottled look of lung tissue and overlapping structures."""
    n = rng.standard_normal((FILM, FILM)).astype(np.float32)
    return ndimage.gaussian_filter(n, 1.5) - ndimage.gaussian_filter(n, 5.0)


def density(a: dict, m: dict, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    body = _body(a)
    inside = _smooth(body > 0.02, 1.0)
    lung = _smooth(m["lung_r"] | m["lung_l"], 2)          # includes lung behind the heart
    heart2 = _smooth(m["heart"], 2)
    d = 1.0 * body
    below = np.clip((_Y - max(a["lung_r"][1], a["lung_l"][1])) / 0.05, 0, 1)   # under the diaphragm
    d += 0.25 * _mediastinum(a, rng) * inside * (1 - 0.5 * below)
    # The heart displaces the lung air in front of and behind it: that, not its own
    # density, is why it shows up white.
    # Real hearts read as one flat bright shape with a sharp border against the lung
    # (median grey is the same from the heart's top to its base): the heart blocks
    # nearly all the lung air behind it, right up to its outline.
    hc = _heart_cover(m)
    cover = hc * rng.uniform(0.8, 1.0)
    d -= rng.uniform(0.62, 0.95) * _air_in_lungs(m, a) * (1 - cover)
    # Lung wraps behind the heart: the heart shadow is greyer than the abdomen below it.
    # ... more so towards its lateral (image-right) side, where more lung lies behind it:
    # real hearts fade from the spine outwards (train films: 0.89 to 0.66 across the heart).
    cols = np.nonzero(m["heart"].any(0))[0]
    lateral = np.clip((_X * FILM - cols.min()) / max(cols.max() - cols.min(), 1), 0, 1)
    d -= rng.uniform(0.05, 0.2) * hc * (0.5 + lateral)
    d += a["breast"] * np.clip((_Y - 0.45) / 0.3, 0, 1) * inside
    # Ribs show over the lungs; over soft tissue they are barely visible.
    # Below the diaphragm the dense abdomen hides them.
    d += rng.uniform(0.08, 0.13) * _ribs(a, rng) * inside * (0.3 + 0.7 * lung) * (1 - 0.8 * below) \
        * (1 - 0.6 * heart2)
    d += rng.uniform(0.16, 0.24) * _clavicle_bone(a)
    d += 0.5 * _shoulders(a)
    # Vessels and lung texture show only faintly through the heart.
    behind = lung * (1 - 0.7 * heart2)
    d += rng.uniform(0.12, 0.2) * _vessels(a, m, rng) * behind
    d += rng.uniform(0.02, 0.035) * _texture(rng) * (0.3 + behind)
    if a["bubble"]:   # gastric air under the left hemidiaphragm (image right)
        bx = a["lung_l"][2][-1].mean() - 0.08
        by = a["lung_l"][1] + 0.05
        bub = ((_X - bx) / 0.06) ** 2 + ((_Y - by) / 0.035) ** 2 < 1
        d -= 0.3 * _smooth(bub & (labels == 0), 1.5)
    # The gap between the lungs above the heart: on real films about as bright as the
    # heart or a little darker (train films: heart minus the gap just above it 0.05,
    # sd 0.05), so the heart's top is no clear edge; never much brighter than the heart.
    gap, between = _mediastinum_fill(d, m)
    d += (gap - rng.uniform(0.0, 0.3)) * between
    return d


def _mediastinum_fill(d: np.ndarray, m: dict) -> tuple:
    """The gap between the lungs (outside the heart, above its base) as a soft mask,
    and how much denser the heart's core is than that gap (median density)."""
    r, l = m["lung_r"], m["lung_l"]
    cols = np.arange(FILM)
    both = r.any(1) & l.any(1)
    r_edge = np.where(r.any(1), FILM - 1 - np.argmax(r[:, ::-1], 1), -1)
    l_edge = np.where(l.any(1), np.argmax(l, 1), FILM)
    between = both[:, None] & (cols[None, :] > r_edge[:, None]) & (cols[None, :] < l_edge[:, None])
    heart = m["heart"]
    rows = np.nonzero(heart.any(1))[0]
    between &= ~heart & (np.arange(FILM) < rows.max())[:, None]
    core = ndimage.binary_erosion(heart, iterations=4)
    if not between.any() or not core.any():
        return 0.0, np.zeros_like(d)
    gap = float(np.median(d[core]) - np.median(d[between]))
    return gap, _smooth(between, 3.0)
