"""Image conversion and PNG writing shared by every stage (raw generator output <-> uint8, grids)."""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image

from gsd.io import atomic


def to_uint8(images) -> np.ndarray:
    """Raw generator output (about [-1, 1]) -> uint8, as the releases do: x * 127.5 + 128, clipped."""
    x = np.asarray(images, np.float32) * 127.5 + 128.0
    return np.clip(np.floor(x), 0, 255).astype(np.uint8)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*H, cols*W, C) mosaic with `pad` pixels between tiles."""
    n, h, w, c = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), fill, np.uint8)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[r * (h + pad) : r * (h + pad) + h, k * (w + pad) : k * (w + pad) + w] = img
    return out


def write_png(path, array: np.ndarray, palette=None) -> pathlib.Path:
    """Write a PNG atomically (a crash never leaves a half-written file). 2-D + palette -> indexed PNG."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array))
    if palette is not None:
        img = img.convert('P') if img.mode != 'P' else img
        img.putpalette(np.asarray(palette, np.uint8).reshape(-1).tolist())
    with atomic.open_atomic(path) as f:
        img.save(f, format='PNG')
    return path


def read_rgb(path) -> np.ndarray:
    """A PNG/JPEG as (H, W, 3) uint8; an unreadable file raises ValueError naming it."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert('RGB'))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f'{path}: cannot read image ({e})') from None


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Class colours blended over the image; background (class 0) left as is."""
    col = colours[mask].astype(np.float32)
    out = image.astype(np.float32)
    fg = (mask > 0)[..., None]
    return np.where(fg, (1 - alpha) * out + alpha * col, out).round().astype(np.uint8)
