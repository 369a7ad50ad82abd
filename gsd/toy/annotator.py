"""Scripted annotator for generated toy-world images: part labels read from the pixels alone.

For the toy world only, this stands in for the person who labels the one to ten generated samples a
few-shot head learns from. It sees nothing but the image (no render parameters), so it labels a
GAN's samples exactly as it labels real renders, and like a careful person it skips a sample it
cannot read (`annotate` returns None, `read` also says why): no face, not exactly two eyes, eyes not
on either side of the nose-mouth axis, a part missing or of implausible size.

It relies on the colour families gsd.toy draws from. The face is the largest connected patch of
skin-hued pixels plus the holes in it; a shading model (each channel affine in x and y, as the
toy's light gradient is) fitted to that skin gives every face pixel its expected skin colour.
Inside the face, vivid pixels redder than the skin are mouth, pixels far greyer or darker than the
skin are eye (sclera, pupil and their blends), and pixels clearly darker than the skin model are
nose; each part is one connected component clear of the face's rim, and nose and mouth edges are
then placed where a pixel is half part, half skin. Dark pixels next to the face are hair, the rest
background. Left and right come from the face's own axes: "down" is perpendicular to the eye pair,
towards the mouth, and left_eye is the one on the image-left of that axis (gsd.toy's convention).
"""

from __future__ import annotations

import numpy as np

from gsd.toy.world import BACKGROUND, HAIR, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE, SKIN

# Thresholds sit between gsd.toy's colour families with wide margins on both sides: skin hue 20-32
# degrees, saturation >= 0.25, value >= 0.47 after shading; hair value <= 0.34; background value
# >= 0.5 at hue 90-270; lips hue 325-352, saturation >= 0.45; nose at 0.62-0.76 of the skin's value.
SKIN_HUE = (-20.0, 55.0)  # wraps through red: colour drift can turn pale skin pinkish
SKIN_MIN_SAT, SKIN_MIN_VALUE = 0.1, 0.4
HAIR_MAX_VALUE = 0.39
MOUTH_HUE_SHIFT, MOUTH_MIN_SAT, MOUTH_MIN_CHROMA = 12.0, 0.3, 0.1  # degrees redder than the skin
EYE_SAT_RATIO, EYE_VALUE_RATIO = 0.5, 0.45  # under half the skin's saturation, or this dark
NOSE_VALUE_RATIO = 0.86
# Plausible sizes. Renders put every part at 0.025-0.13 of the face (skin + eyes + nose + mouth)
# and the face at >= 0.11 of the image, so samples outside these bounds are broken, not unusual.
MIN_FACE = 0.04  # of the image
EYE_SHARE, NOSE_SHARE, MOUTH_SHARE = (0.012, 0.2), (0.008, 0.15), (0.01, 0.25)
MAX_EYE_RATIO = 2.5  # the larger eye over the smaller; renders draw them equal
MAX_TILT = 50.0  # degrees; renders turn faces by at most 25


def _hsv(rgb: np.ndarray):
    """RGB floats in [0, 1] (..., 3) -> hue in degrees, saturation, value."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = np.maximum(mx - mn, 1e-6)
    hue = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return hue * 60.0, (mx - mn) / np.maximum(mx, 1e-6), mx


def components(mask: np.ndarray):
    """4-connected components of a boolean image: labels (0 outside, 1..n) and sizes (index = label).

    Union-find without a per-pixel loop: every round hooks the larger of two neighbouring roots under
    the smaller, then pointer jumping flattens the trees; it stops once no edge joins two roots.
    """
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    across, down = mask[:, :-1] & mask[:, 1:], mask[:-1] & mask[1:]
    a = np.concatenate([idx[:, :-1][across], idx[:-1][down]])
    b = np.concatenate([idx[:, 1:][across], idx[1:][down]])
    parent = np.arange(h * w)
    while True:
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
        ra, rb = parent[a], parent[b]
        join = ra != rb
        if not join.any():
            break
        np.minimum.at(parent, np.maximum(ra, rb)[join], np.minimum(ra, rb)[join])
    labels = np.zeros(h * w, np.int64)
    _, inverse = np.unique(parent[mask.ravel()], return_inverse=True)
    labels[mask.ravel()] = inverse + 1
    return labels.reshape(h, w), np.bincount(labels)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """The mask plus every region of its complement that does not reach the image border."""
    labels, _ = components(~mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask | ((labels > 0) & ~np.isin(labels, border))


def erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion; outside the image counts as outside the mask."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[[0, -1]] = False
    out[:, [0, -1]] = False
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """4-neighbour dilation."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _skin_model(rgb: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Per-channel affine fit of colour over x, y on the skin pixels, evaluated everywhere.

    The toy's shading is a linear gradient, so clean skin fits exactly; the refit drops pixels more
    than 0.06 off the first fit (anti-aliased edges, a nose that slipped into the skin patch).
    """
    h, w = skin.shape
    ys, xs = np.mgrid[0:h, 0:w] / max(h, w)
    basis = np.stack([np.ones_like(xs), xs, ys], -1)
    keep = skin
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(basis[keep], rgb[keep], rcond=None)
        model = basis @ coef
        keep = skin & (np.abs(rgb - model).max(-1) < 0.06)
        if keep.sum() < 10:
            break
    return np.clip(model, 1e-3, 1)


def _parts(candidates: np.ndarray, min_size: float) -> list[np.ndarray]:
    """Components of `candidates` with >= min_size pixels, holes filled, largest first."""
    labels, sizes = components(candidates)
    return [fill_holes(labels == k) for k in np.argsort(-sizes) if k > 0 and sizes[k] >= min_size]


def _unmix(rgb: np.ndarray, skin: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Share of `colour` in each pixel read as a blend of it with the local skin colour.

    Anti-aliasing and blur blend a part's colour linearly with the skin around it, so thresholding
    this share at one half puts the part's edge where a hard mask would (a hue threshold would not:
    a saturated part pulls the hue of a blend towards itself).
    """
    d = colour - skin
    return ((rgb - skin) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-6)


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def _grow(seed: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """The component of `candidates` (within two pixels of `seed`) that overlaps the seed; else the seed."""
    found = [m for m in _parts(candidates & dilate(dilate(seed)), 1) if (m & seed).any()]
    return found[0] if found else seed


def read(image: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(mask, '') for a readable toy image, (None, why it was refused) otherwise; see `annotate`."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f'annotate expects an (H, W, 3) image, got shape {img.shape}')
    rgb = img.astype(np.float64) / 255.0
    hue, sat, val = _hsv(rgb)
    h, w = val.shape

    skin_hue = (hue - SKIN_HUE[0]) % 360.0 <= SKIN_HUE[1] - SKIN_HUE[0]
    labels, sizes = components(skin_hue & (sat >= SKIN_MIN_SAT) & (val >= SKIN_MIN_VALUE))
    if len(sizes) < 2 or sizes[1:].max() < MIN_FACE * h * w:
        return None, 'no face'
    skin = labels == np.argmax(sizes[1:]) + 1
    # Closing first, so that a few noisy skin pixels cannot open an eye to the outside.
    face = fill_holes(erode(dilate(skin)) | skin)
    # Parts sit well inside the face; what touches this two-pixel rim is edge blending.
    inner = erode(erode(face))
    area = face.sum()

    model = _skin_model(rgb, skin)
    model_hue, model_sat, model_val = _hsv(model)
    shift = (hue - model_hue + 180.0) % 360.0 - 180.0
    mouthy = (
        inner & (shift < -MOUTH_HUE_SHIFT) & (shift > -150) & (sat >= MOUTH_MIN_SAT) & (sat * val >= MOUTH_MIN_CHROMA)
    )
    eyeish = inner & ~mouthy & ((sat < EYE_SAT_RATIO * model_sat) | (val < EYE_VALUE_RATIO * model_val))
    ratio = (rgb * model).sum(-1) / (model * model).sum(-1)  # brightness relative to the skin
    nosy = inner & ~mouthy & ~eyeish
    eyes = _parts(eyeish, max(4.0, EYE_SHARE[0] * area))
    noses = _parts(nosy & (val < NOSE_VALUE_RATIO * model_val), max(4.0, NOSE_SHARE[0] * area))
    mouths = _parts(mouthy, max(4.0, MOUTH_SHARE[0] * area))
    if len(eyes) != 2:
        return None, f'{len(eyes)} eyes'
    if not noses or not mouths:
        return None, 'no nose' if not noses else 'no mouth'
    # Nose and mouth edges where a pixel is half part, half skin, the part's colour read from its
    # own core (anti-aliasing and blur blend the two linearly).
    core = np.percentile(ratio[noses[0]], 10)
    nose = _grow(noses[0], nosy & (ratio <= (1 + core) / 2))
    lips = erode(mouths[0]) if erode(mouths[0]).any() else mouths[0]
    mouth = _grow(mouths[0], inner & ~nose & (_unmix(rgb, model, np.median(rgb[lips], axis=0)) >= 0.5))

    eye_areas = np.array([e.sum() for e in eyes])
    if eye_areas.max() > MAX_EYE_RATIO * eye_areas.min() or eye_areas.max() > EYE_SHARE[1] * area:
        return None, 'eye sizes'
    if nose.sum() > NOSE_SHARE[1] * area or mouth.sum() > MOUTH_SHARE[1] * area:
        return None, 'nose or mouth size'

    # Face axes from the parts: "down" is perpendicular to the eye pair, towards the mouth.
    e0, e1, pn, pm = _centroid(eyes[0]), _centroid(eyes[1]), _centroid(nose), _centroid(mouth)
    mid, across = (e0 + e1) / 2, (e1 - e0) / np.linalg.norm(e1 - e0)
    down = np.array([-across[1], across[0]])
    if (pm - mid) @ down < 0:
        down = -down
    if down[1] < np.cos(np.deg2rad(MAX_TILT)):
        return None, 'face upside down or on its side'
    if not 0 < (pn - mid) @ down < (pm - mid) @ down:
        return None, 'nose not between eyes and mouth'
    axis = pm - pn
    sides = [axis[0] * (e - pn)[1] - axis[1] * (e - pn)[0] for e in (e0, e1)]
    if sides[0] * sides[1] >= 0:
        return None, 'eyes not on either side of the nose-mouth axis'
    right = np.array([down[1], -down[0]])  # image +x for an upright face
    left_first = (e0 - mid) @ right < (e1 - mid) @ right

    dark = ~face & (val < HAIR_MAX_VALUE)
    labels, _ = components(dark)
    hair = np.isin(labels, np.unique(labels[dilate(face) & dark]))
    if not hair.any():
        return None, 'no hair'

    mask = np.full((h, w), BACKGROUND, np.uint8)
    mask[hair] = HAIR
    mask[face] = SKIN
    mask[nose] = NOSE
    mask[mouth] = MOUTH
    mask[eyes[0]] = LEFT_EYE if left_first else RIGHT_EYE
    mask[eyes[1]] = RIGHT_EYE if left_first else LEFT_EYE
    return mask, ''


def annotate(image: np.ndarray) -> np.ndarray | None:
    """Part mask (H, W) uint8 of gsd.toy.CLASSES for a generated toy image (H, W, 3) uint8, or None
    when the sample cannot be read. Uses only the pixels; for toy-world images only."""
    return read(image)[0]
