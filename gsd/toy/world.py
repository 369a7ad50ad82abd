"""Toy world: procedural cartoon faces with exact part masks, for work without downloadable datasets.

FFHQ and CelebAMask-HQ cannot be downloaded here, so gsd ships a world a small StyleGAN2 can learn
in a couple of CPU hours: flat-shaded cartoon faces (skin ellipse, hair cap, two eyes, nose, mouth)
over smooth textured backgrounds, with wide variation in placement, size, rotation, proportions and
colours but no fine detail. Every render comes with its ground-truth mask; `gsd.toy.annotate`
(gsd.toy.annotator) labels *generated* images from their pixels alone, standing in for the person who
labels the one to ten samples the few-shot head learns from.

Colour families are disjoint by design so that labels can be read from pixels: skin is orange-hued
(hue 20-32 degrees), hair is dark (HSV value <= 0.28), sclera near-white, pupils near-black, lips
and mouths red-magenta (hue 325-352), nose a darker copy of the skin, backgrounds bright (value >=
0.55) in the green-cyan-blue-violet hues (90-270 degrees), never skin-like.

Conventions: images are square; coordinates are fractions of the image side, x right, y down. The
face frame has u along the face's horizontal axis and v pointing from forehead to chin, in units of
the face half-height. `left_eye` is the eye on the image-left side of the face in that rotated frame
(u < 0): the viewer's left, the character's right eye.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import pathlib

import numpy as np
from PIL import Image

from gsd.io import atomic, images

CLASSES: tuple[str, ...] = ('background', 'skin', 'hair', 'left_eye', 'right_eye', 'nose', 'mouth')
BACKGROUND, SKIN, HAIR, LEFT_EYE, RIGHT_EYE, NOSE, MOUTH = range(len(CLASSES))

# One clearly distinct colour per class for colour-coded masks and overlays.
PALETTE = np.array(
    [
        [0, 0, 0],  # background
        [250, 190, 140],  # skin
        [120, 60, 10],  # hair
        [40, 110, 255],  # left_eye
        [30, 220, 90],  # right_eye
        [255, 230, 0],  # nose
        [230, 20, 60],  # mouth
    ],
    np.uint8,
)

HAIR_STYLES = ('crop', 'bangs', 'long', 'side_part')

# Each output pixel averages SUPERSAMPLE x SUPERSAMPLE samples (anti-aliased edges); an odd factor
# puts one sample exactly at the pixel centre, which is where the hard mask label is read.
SUPERSAMPLE = 3


@dataclasses.dataclass(frozen=True)
class FaceParams:
    """Everything that determines one toy image; `render` is a pure function of it.

    Positions are fractions of the image side; face-frame quantities (u, v) are in units of the face
    half-height b = face_height / 2. Colours are RGB floats in [0, 1].
    """

    size: int  # output side in pixels
    center: tuple[float, float]  # face-ellipse centre (x, y)
    face_height: float  # skin-ellipse height / image side
    aspect: float  # face width / height
    angle: float  # radians; positive turns the face clockwise on screen
    skin: tuple[float, float, float]
    light: tuple[float, float]  # shading = 1 + light . (u / aspect, v) on skin, nose and hair
    hair_style: str  # one of HAIR_STYLES
    hair: tuple[float, float, float]
    hair_volume: float  # how far the hair cap stands out of the face ellipse
    hairline: float  # hair covers v < -hairline + curve u^2 + tilt u
    hairline_curve: float
    hairline_tilt: float
    back_hair: tuple[float, float]  # (half-width, bottom v) of hair behind the face; (0, 0) = none
    eye_spacing: float  # eye centres at u = -/+ eye_spacing
    eye_y: float
    eye_size: tuple[float, float]  # sclera semi-axes (u, v)
    pupil_radius: float
    gaze: tuple[float, float]  # pupil offset from the eye centre, same for both eyes
    sclera: tuple[float, float, float]
    pupil: tuple[float, float, float]
    nose_shape: str  # 'ellipse' or 'triangle' (apex up)
    nose_center: float  # v of the nose centre (on the face axis)
    nose_size: tuple[float, float]  # semi-axes (u, v)
    nose_shade: float  # nose colour = skin * nose_shade (then shading)
    mouth_center: float  # v of the mouth centre
    mouth_size: tuple[float, float]  # semi-axes (u, v) of the lips
    smile: float  # corners move up by smile * mouth half-height
    mouth_open: bool  # open mouths show a dark inner ellipse (still class mouth)
    lips: tuple[float, float, float]
    mouth_inside: tuple[float, float, float]
    background: tuple[tuple[float, float, float], ...]  # three colours
    bg_gradient: tuple[float, float]  # linear blend colour 0 -> 1 along this vector
    bg_waves: tuple[tuple[float, float, float, float], ...]  # (fx, fy cycles/side, phase, amplitude)
    bg_sharpness: float  # blend toward colour 2 by 0.5 + 0.5 tanh(sharpness * waves)
    bg_mix: float  # at most this much of colour 2


def _hsv(h_deg, s, v) -> tuple[float, float, float]:
    return tuple(float(c) for c in colorsys.hsv_to_rgb((h_deg % 360) / 360, s, v))


def _skin_colour(rng) -> tuple[float, float, float]:
    # Families from pale to brown; saturation >= 0.25 keeps even pale skin apart from near-grey eyes,
    # value >= 0.55 keeps the darkest skin well above the hair (<= 0.28) after shading.
    family = rng.integers(4)
    h, s, v = [
        ((20, 30), (0.25, 0.33), (0.88, 0.97)),
        ((22, 32), (0.32, 0.45), (0.80, 0.92)),
        ((22, 32), (0.42, 0.55), (0.68, 0.82)),
        ((20, 28), (0.45, 0.60), (0.55, 0.66)),
    ][family]
    return _hsv(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))


def _hair_colour(rng) -> tuple[float, float, float]:
    # Black, dark brown, auburn, blue-black: all dark, so never mistaken for skin or background.
    family = rng.integers(4)
    h, s, v = [
        ((0, 360), (0.0, 0.3), (0.05, 0.15)),
        ((15, 35), (0.45, 0.75), (0.14, 0.26)),
        ((5, 18), (0.55, 0.8), (0.18, 0.28)),
        ((210, 260), (0.4, 0.7), (0.15, 0.28)),
    ][family]
    return _hsv(rng.uniform(*h), rng.uniform(*s), rng.uniform(*v))


def _layout(rng, aspect: float) -> dict:
    """Eyes, nose, mouth and hairline in the face frame; redrawn until the mouth fits in the face."""
    while True:
        ew = rng.uniform(0.18, 0.23)
        eh = ew * rng.uniform(0.65, 0.95)
        ex = rng.uniform(ew + 0.08, 0.75 * aspect - ew)
        ey = rng.uniform(-0.22, -0.02)
        nw, nh = rng.uniform(0.14, 0.19), rng.uniform(0.15, 0.21)
        ny = ey + eh + rng.uniform(0.07, 0.14) + nh
        mouth_open = bool(rng.random() < 0.4)
        mw = rng.uniform(0.28, 0.42)
        mh = rng.uniform(0.13, 0.2) if mouth_open else rng.uniform(0.085, 0.12)
        smile = rng.uniform(-0.3, 1.0)
        my = ny + nh + rng.uniform(0.06, 0.14) + mh
        # Mouth bottom and corners well inside the face ellipse: keeps skin all around every part.
        if my + mh <= 0.78 and (mw / aspect) ** 2 + (my - smile * mh) ** 2 <= 0.62:
            break
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    curve = rng.uniform(*{'crop': (0.3, 0.8), 'bangs': (0.0, 0.2), 'long': (0.3, 0.8), 'side_part': (0.2, 0.6)}[style])
    tilt = rng.choice([-1, 1]) * rng.uniform(0.25, 0.45) if style == 'side_part' else 0.0
    lowest = rng.uniform(0.0, 0.2) + {'crop': 0.45, 'bangs': 0.3, 'long': 0.45, 'side_part': 0.4}[style]
    # The hairline stays 0.2 above the eyes across their whole width (hair never touches an eye) and
    # at most 0.85 above the centre (hair always covers some forehead, so it is never cropped away
    # with the crown); curve and tilt shrink where both cannot hold otherwise.
    clear, reach = eh - ey + 0.2, ex + ew
    hairline = min(max(lowest, clear + 0.02), 0.85)
    drop = curve * reach**2 + abs(tilt) * reach
    shrink = min(1.0, max(hairline - clear, 0.0) / drop) if drop > 0 else 1.0
    curve, tilt = curve * shrink, tilt * shrink
    back_hair = (aspect + rng.uniform(0.15, 0.35), rng.uniform(0.4, 1.3)) if style == 'long' else (0.0, 0.0)
    pr = eh * rng.uniform(0.45, 0.62)
    gaze = (rng.uniform(-1, 1) * 0.55 * (ew - pr), rng.uniform(-1, 1) * 0.45 * (eh - pr))
    return dict(
        eye_spacing=ex,
        eye_y=ey,
        eye_size=(ew, eh),
        pupil_radius=pr,
        gaze=gaze,
        nose_shape=('ellipse', 'triangle')[rng.integers(2)],
        nose_center=ny,
        nose_size=(nw, nh),
        mouth_center=my,
        mouth_size=(mw, mh),
        smile=smile,
        mouth_open=mouth_open,
        hair_style=style,
        hairline=hairline,
        hairline_curve=curve,
        hairline_tilt=float(tilt),
        back_hair=back_hair,
        hair_volume=rng.uniform(0.08, 0.2),
    )


def _part_extents(lay: dict) -> np.ndarray:
    """Face-frame points that must stay in frame: the bounds of eyes, nose and mouth, and a point of
    hair just above the hairline on the face axis (so some hair is always visible)."""
    ex, ey, (ew, eh) = lay['eye_spacing'], lay['eye_y'], lay['eye_size']
    (nw, nh), ny = lay['nose_size'], lay['nose_center']
    (mw, mh), my = lay['mouth_size'], lay['mouth_center']
    pts = [(s * ex + du, ey + dv) for s in (-1, 1) for du in (-ew, ew) for dv in (-eh, eh)]
    pts += [(-1.25 * nw, ny + nh), (1.25 * nw, ny + nh), (0, ny - 1.2 * nh)]
    pts += [(-mw, my - lay['smile'] * mh), (mw, my - lay['smile'] * mh), (0, my - mh), (0, my + mh)]
    pts += [(0, -lay['hairline'] - 0.08)]
    return np.array(pts)


# Points spread uniformly over the unit disk (sunflower pattern): the visible share of the face
# ellipse is the share of these points that land in the image.
_DISK = np.stack(
    [
        np.sqrt((np.arange(400) + 0.5) / 400) * np.cos(np.arange(400) * 2.39996),
        np.sqrt((np.arange(400) + 0.5) / 400) * np.sin(np.arange(400) * 2.39996),
    ],
    1,
)


def _to_image(center, b: float, angle: float, pts: np.ndarray) -> np.ndarray:
    """Face-frame points (u, v) -> image coordinates; the inverse of `_face_frame`."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack(
        [center[0] + b * (c * pts[:, 0] - s * pts[:, 1]), center[1] + b * (s * pts[:, 0] + c * pts[:, 1])], 1
    )


def _background_params(rng) -> dict:
    # Hues within 35 degrees of a base in 95..265 keep every blend of the three colours away from
    # the skin and lip hues; value >= 0.55 keeps it far brighter than hair.
    base = rng.uniform(95, 265)
    colours = tuple(
        _hsv(np.clip(base + rng.uniform(-35, 35), 90, 270), rng.uniform(0.22, 0.65), rng.uniform(0.55, 0.95))
        for _ in range(3)
    )
    a = rng.uniform(0, 2 * np.pi)
    gradient = tuple(rng.uniform(0.5, 1.5) * np.array([np.cos(a), np.sin(a)]))
    stripes = rng.random() < 0.4
    waves = []
    for _ in range(1 if stripes else 3):
        # Low frequencies only (at most 4.5 cycles per side) so the GAN can reproduce them.
        f, d = rng.uniform(2.0, 4.5) if stripes else rng.uniform(0.8, 2.2), rng.uniform(0, 2 * np.pi)
        waves.append(
            (f * np.cos(d), f * np.sin(d), rng.uniform(0, 2 * np.pi), 1.0 if stripes else rng.uniform(0.5, 1.0))
        )
    return dict(
        background=colours,
        bg_gradient=tuple(float(g) for g in gradient),
        bg_waves=tuple(tuple(float(x) for x in w) for w in waves),
        bg_sharpness=rng.uniform(1.5, 3.5),
        bg_mix=rng.uniform(0.4, 0.9),
    )


def random_params(rng: np.random.Generator, size: int = 64) -> FaceParams:
    """Draw one face. The draws do not depend on `size`: one rng state gives the same face at any size."""
    face_height = rng.uniform(0.5, 0.85)
    aspect = rng.uniform(0.75, 0.92)
    angle = np.deg2rad(rng.uniform(-25, 25))
    lay = _layout(rng, aspect)
    light_dir, light = rng.uniform(0, 2 * np.pi), rng.uniform(0.03, 0.15)
    # Centre anywhere such that <= 15% of the face ellipse is cut off and every part stays at least
    # 4% of the side inside the frame (the annotator needs to see them whole).
    b = face_height / 2
    parts = _part_extents(lay)
    disk = _DISK * np.array([aspect, 1.0])
    for _ in range(200):
        center = tuple(rng.uniform(0.05, 0.95, 2))
        face, p = _to_image(center, b, angle, disk), _to_image(center, b, angle, parts)
        if np.all((face >= 0) & (face <= 1), 1).mean() >= 0.85 and np.all((p >= 0.04) & (p <= 0.96)):
            break
    else:
        center = (0.5, 0.5)  # always valid: the largest face fits when centred
    return FaceParams(
        size=int(size),
        center=tuple(float(c) for c in center),
        face_height=face_height,
        aspect=aspect,
        angle=float(angle),
        skin=_skin_colour(rng),
        light=(float(light * np.cos(light_dir)), float(light * np.sin(light_dir))),
        hair=_hair_colour(rng),
        sclera=_hsv(rng.uniform(0, 360), rng.uniform(0, 0.05), rng.uniform(0.9, 1.0)),
        pupil=_hsv(rng.uniform(0, 360), rng.uniform(0, 0.35), rng.uniform(0.04, 0.18)),
        nose_shade=rng.uniform(0.62, 0.76),
        lips=_hsv(rng.uniform(325, 352), rng.uniform(0.45, 0.75), rng.uniform(0.55, 0.85)),
        mouth_inside=_hsv(rng.uniform(330, 352), rng.uniform(0.6, 0.85), rng.uniform(0.3, 0.4)),
        **lay,
        **_background_params(rng),
    )


def _face_frame(p: FaceParams, x: np.ndarray, y: np.ndarray):
    """Image coordinates -> face frame (u, v) in units of the face half-height."""
    b = p.face_height / 2
    dx, dy = x - p.center[0], y - p.center[1]
    c, s = np.cos(p.angle), np.sin(p.angle)
    return (c * dx + s * dy) / b, (-s * dx + c * dy) / b


def _background(p: FaceParams, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    c0, c1, c2 = (np.array(c) for c in p.background)
    t = np.clip(0.5 + p.bg_gradient[0] * (x - 0.5) + p.bg_gradient[1] * (y - 0.5), 0, 1)[..., None]
    waves = sum(a * np.cos(2 * np.pi * (fx * x + fy * y) + ph) for fx, fy, ph, a in p.bg_waves)
    w = p.bg_mix * (0.5 + 0.5 * np.tanh(p.bg_sharpness * waves))[..., None]
    return ((1 - t) * c0 + t * c1) * (1 - w) + w * c2


def _draw(rgb: np.ndarray, label: np.ndarray, cover: np.ndarray, colour, cls: int) -> None:
    """Paint `colour` (RGB or an (..., 3) field) and class `cls` where `cover` holds, over what is there."""
    rgb[cover] = np.broadcast_to(colour, rgb.shape)[cover]
    label[cover] = cls


def _paint(p: FaceParams, coords: np.ndarray):
    """Colour and topmost class at the sample points coords x coords (fractions of the side)."""
    x, y = np.meshgrid(coords, coords)
    u, v = _face_frame(p, x, y)
    rgb = _background(p, x, y)
    label = np.zeros(x.shape, np.uint8)
    shade = (1 + p.light[0] * u / p.aspect + p.light[1] * v)[..., None]
    hair = np.array(p.hair) * shade
    t = p.hair_volume
    if p.back_hair[0] > 0:
        # Long hair falls behind the face: a rounded rectangle from the crown down to back_hair[1].
        top, bottom = -(1 + t), p.back_hair[1]
        half = (bottom - top) / 2
        cover = (u / p.back_hair[0]) ** 4 + ((v - top - half) / half) ** 4 <= 1
        _draw(rgb, label, cover, hair, HAIR)
    _draw(rgb, label, (u / p.aspect) ** 2 + v**2 <= 1, np.array(p.skin) * shade, SKIN)
    cap = (u / (p.aspect + 0.6 * t)) ** 2 + ((v + 0.5 * t) / (1 + 0.5 * t)) ** 2 <= 1
    hairline = -p.hairline + p.hairline_curve * u**2 + p.hairline_tilt * u
    _draw(rgb, label, cap & (v < hairline), hair, HAIR)
    (ew, eh), (gu, gv) = p.eye_size, p.gaze
    for cls, side in ((LEFT_EYE, -1), (RIGHT_EYE, 1)):
        # Both eyes come from this one code path with shared colours, size and gaze: they differ
        # only in where they sit, so telling them apart needs the face's geometry, not colour.
        eu, ev = u - side * p.eye_spacing, v - p.eye_y
        sclera = (eu / ew) ** 2 + (ev / eh) ** 2 <= 1
        _draw(rgb, label, sclera, p.sclera, cls)
        _draw(rgb, label, sclera & ((eu - gu) ** 2 + (ev - gv) ** 2 <= p.pupil_radius**2), p.pupil, cls)
    (nw, nh), ny = p.nose_size, p.nose_center
    if p.nose_shape == 'triangle':
        # Apex up at ny - 1.2 nh, base at ny + nh, 2.5 nw wide: about the ellipse's area.
        depth = (v - (ny - 1.2 * nh)) / (2.2 * nh)
        nose = (depth >= 0) & (depth <= 1) & (np.abs(u) <= 1.25 * nw * depth)
    else:
        nose = (u / nw) ** 2 + ((v - ny) / nh) ** 2 <= 1
    _draw(rgb, label, nose, np.array(p.skin) * p.nose_shade * shade, NOSE)
    (mw, mh), my = p.mouth_size, p.mouth_center
    bend = p.smile * mh * (u / mw) ** 2  # corners up for a smile, down for a frown
    _draw(rgb, label, (u / mw) ** 2 + ((v - my + bend) / mh) ** 2 <= 1, p.lips, MOUTH)
    if p.mouth_open:
        inner = (u / (0.72 * mw)) ** 2 + ((v - my + bend) / (0.5 * mh)) ** 2 <= 1
        _draw(rgb, label, inner, p.mouth_inside, MOUTH)
    return rgb, label


def render(params: FaceParams) -> tuple[np.ndarray, np.ndarray]:
    """Image (S, S, 3) uint8 with anti-aliased edges, and its hard mask (S, S) uint8 of CLASSES indices.

    A pixel's label is the topmost part covering its centre.
    """
    n, k = params.size, SUPERSAMPLE
    # float64 (float32 saves only ~15%): a sample point exactly on an edge, whose label could differ
    # between machines' rounding, is then vanishingly rare.
    rgb, label = _paint(params, (np.arange(n * k) + 0.5) / (n * k))
    image = rgb.reshape(n, k, n, k, 3).mean((1, 3))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), label[k // 2 :: k, k // 2 :: k].copy()


def sample(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, S, S, 3) uint8 and masks (n, S, S) uint8, a pure function of (seed, index, size).

    Image i draws from its own stream np.random.default_rng([seed, i]) (seed >= 0), so sample(n, s)
    is a prefix of sample(m, s) for m > n, any image can be rendered alone, and the same seed gives
    the same faces at every size.
    """
    pairs = [render(random_params(np.random.default_rng([seed, i]), size)) for i in range(n)]
    imgs = np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8)
    masks = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, size, size), np.uint8)
    return imgs, masks


def _valid_png(path: pathlib.Path, size: int, mode: str) -> bool:
    """A complete, decodable PNG of the expected size and mode (a crash or a foreign file is redone)."""
    try:
        with Image.open(path) as im:
            im.load()
            ok = im.size == (size, size) and im.mode == mode
            return ok and (mode != 'P' or int(np.asarray(im).max()) < len(CLASSES))
    except (OSError, ValueError):
        return False


def write_image_folder(out_dir, n: int, seed: int, size: int = 64) -> int:
    """Export sample(n, seed, size) as images/00000.png (RGB), masks/00000.png (indexed, PALETTE) and
    classes.json; returns how many images it wrote.

    Every file is written atomically, and an image whose PNG and mask already exist and decode is
    skipped, so an interrupted export resumes where it stopped. A folder made with another seed or
    size is refused rather than mixed.
    """
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {'classes': list(CLASSES), 'palette': PALETTE.tolist(), 'seed': int(seed), 'size': int(size)}
    meta_path = out / 'classes.json'
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if (old.get('seed'), old.get('size'), old.get('classes')) != (seed, size, list(CLASSES)):
            raise ValueError(
                f'{meta_path}: folder holds seed={old.get("seed")} size={old.get("size")}, not seed={seed} size={size}'
            )
    else:
        atomic.write_json(meta_path, meta)
    written = 0
    for i in range(n):
        img_path, mask_path = out / 'images' / f'{i:05d}.png', out / 'masks' / f'{i:05d}.png'
        if _valid_png(img_path, size, 'RGB') and _valid_png(mask_path, size, 'P'):
            continue
        image, mask = render(random_params(np.random.default_rng([seed, i]), size))
        images.write_png(img_path, image)
        images.write_png(mask_path, mask, palette=PALETTE)
        written += 1
    return written


def composite(seed: int, width: int = 192, height: int = 128, sizes=(96, 56, 36)) -> tuple[np.ndarray, np.ndarray]:
    """Several faces of different sizes on one canvas: image (height, width, 3) uint8 and mask (height, width).

    The test of "any size, position and count" for segmenters that are not tied to the GAN's frame.
    One background (drawn as `random_params` draws them, in units of the canvas height) spans the
    canvas; face j is drawn at the centre of its own square tile of side sizes[j] (so it is never cut
    off), tiles side by side in random order with random gaps and heights. Deterministic in `seed`.
    """
    sizes = [int(s) for s in sizes]
    if sum(sizes) > width or max(sizes) > height:
        raise ValueError(f'tiles {sizes} do not fit side by side on a {width}x{height} canvas')
    rng = np.random.default_rng([seed, 7_777_777])
    k = SUPERSAMPLE
    x, y = np.meshgrid((np.arange(width * k) + 0.5) / (height * k), (np.arange(height * k) + 0.5) / (height * k))
    rgb = _background(random_params(rng, height), x, y)
    label = np.zeros(x.shape, np.uint8)
    gaps = rng.dirichlet(np.ones(len(sizes) + 1)) * (width - sum(sizes))
    left = gaps[0]
    for j, g in zip(rng.permutation(len(sizes)), gaps[1:]):
        s = sizes[j]
        p = random_params(rng, s)
        # Centred and at most 0.7 of the tile high: the whole face and hair stay inside the tile.
        p = dataclasses.replace(p, center=(0.5, 0.5), face_height=min(p.face_height, 0.7))
        tile_rgb, tile_label = _paint(p, (np.arange(s * k) + 0.5) / (s * k))
        x0, y0 = int(round(left)) * k, int(round(rng.uniform(0, height - s))) * k
        region = (slice(y0, y0 + s * k), slice(x0, x0 + s * k))
        face = tile_label > 0
        rgb[region][face] = tile_rgb[face]
        label[region][face] = tile_label[face]
        left += s + g
    image = rgb.reshape(height, k, width, k, 3).mean((1, 3))
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), label[k // 2 :: k, k // 2 :: k].copy()
