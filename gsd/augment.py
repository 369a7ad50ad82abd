"""Auto-shot geometric augmentation on device: random flip, scale, rotation and translation of image batches and labels.

The paper (sec. 4.3) trains the auto-shot UNet with 1) random horizontal flips, 2) random scales
between 0.5 and 2, 3) random rotations between -10 and 10 degrees, 4) random vertical and
horizontal translations between 0% and 50% of the image size. Each example gets one affine map,
stored as its inverse: a (2, 3) matrix M taking an output pixel (x, y, 1) to the source pixel it
reads, ``src_x = M[0] . (x, y, 1)``, ``src_y = M[1] . (x, y, 1)``, with x the column, y the row and
pixel centres at integers. The forward map is flip, then scale, then rotation (all about the
image centre), then translation, so a translation (dx, dy) moves content by exactly (dx, dy) pixels.

Choices the paper leaves open:
* scale is drawn log-uniform in [0.5, 2] (``log_scale=True``): shrinking by k and enlarging by k are
  then equally likely and the median scale is 1, whereas a uniform draw enlarges 2 times in 3 (mean
  1.25) and crops the object most of the time. torchvision's RandomAffine, which the authors'
  translate=0.4 parameter suggests they used, draws uniform: pass ``log_scale=False`` for that;
* a translation "between 0% and 50%" of random sign is uniform in [-t, t] x size per axis
  (RandomAffine's draw);
* out-of-frame image pixels get ``fill`` (default 0.0: mid grey for images scaled to [-1, 1], close to
  the mean of natural images, so the frame edge is a weak cue), and their labels the background
  class; bilinear sampling blends the fill into the one-pixel border, as it blends pixels;
* integer label maps are sampled nearest-neighbour (no invented classes); soft labels (N, H, W, K)
  are per-pixel PROBABILITIES, sampled bilinear with one-hot background outside, so every pixel stays
  a distribution (pass softmax(logits), not logits: interpolating logits is not a mixture, and no
  finite logit vector is "background for sure");
* a mirror (any matrix with negative determinant) swaps left and right, so labels warped by one get
  ``flip_permutation`` (e.g. left_eye <-> right_eye); without it a flipped left eye would still be
  labelled left_eye.

Everything is jnp and per-example vmapped gathers, so it runs inside a jitted train step, sharded
along the batch, and a new key never recompiles.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

FLIP_PROB = 0.5


def swap_permutation(num_classes: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Class permutation (num_classes,) that swaps each (a, b) of `pairs`, e.g. ((LEFT_EYE, RIGHT_EYE),)."""
    perm = np.arange(num_classes)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


@functools.partial(jax.jit, static_argnames=('height', 'width'))
def affine_matrix(height: int, width: int, *, flip=False, scale=1.0, angle=0.0, shift=(0.0, 0.0)) -> jax.Array:
    """Inverse maps (N, 2, 3) for per-example flip (bool), scale (>0), angle (degrees, counter-clockwise
    as seen on screen) and shift (dx, dy) in pixels; scalars give N = 1, arrays of shape (N,) / (N, 2)."""
    flip, scale, angle = (jnp.atleast_1d(jnp.asarray(v)) for v in (flip, scale, angle))
    shift = jnp.asarray(shift, jnp.float32).reshape(-1, 2)
    theta = jnp.deg2rad(angle.astype(jnp.float32))
    # Rows y grow downwards, so a counter-clockwise turn on screen is R(-theta) in (x, y); the inverse
    # map undoes it with R(+theta), divides by the scale and mirrors last.
    cos, sin = jnp.cos(theta) / scale, jnp.sin(theta) / scale
    f = jnp.where(flip, -1.0, 1.0)
    a = jnp.stack([jnp.stack([f * cos, -f * sin], -1), jnp.stack([sin, cos], -1)], -2)  # (N, 2, 2)
    c = jnp.array([(width - 1) / 2, (height - 1) / 2], jnp.float32)
    b = c - jnp.einsum('nij,nj->ni', a, c + shift)
    return jnp.concatenate([a, b[..., None]], -1).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=('batch', 'height', 'width', 'flip', 'log_scale'))
def random_affine(
    key,
    batch: int,
    height: int,
    width: int,
    *,
    flip: bool = True,
    scale=(0.5, 2.0),
    rotate: float = 10.0,
    translate: float = 0.5,
    log_scale: bool = True,
) -> jax.Array:
    """(batch, 2, 3) random inverse maps: flip with p=0.5, scale in `scale` (log-uniform, or uniform with
    ``log_scale=False``), angle uniform in +-`rotate` degrees, shift uniform in +-`translate` x size."""
    kf, ks, kr, kt = jax.random.split(key, 4)
    flips = jax.random.bernoulli(kf, FLIP_PROB, (batch,)) if flip else jnp.zeros((batch,), bool)
    lo, hi = scale
    if log_scale:
        s = jnp.exp(jax.random.uniform(ks, (batch,), minval=jnp.log(lo), maxval=jnp.log(hi)))
    else:
        s = jax.random.uniform(ks, (batch,), minval=lo, maxval=hi)
    angle = jax.random.uniform(kr, (batch,), minval=-rotate, maxval=rotate)
    shift = jax.random.uniform(kt, (batch, 2), minval=-translate, maxval=translate) * jnp.array([width, height])
    return affine_matrix(height, width, flip=flips, scale=s, angle=angle, shift=shift)


def is_mirror(matrices) -> jax.Array:
    """(N,) bool: which maps reverse orientation (so swap left/right classes)."""
    a = matrices[:, :, :2]
    return a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0] < 0


def _source_coords(matrix, height, width):
    y, x = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing='ij')
    sx = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    sy = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    return sx, sy


def _bilinear(img, matrix, fill):
    """One example (H, W, C) -> (H, W, C); weights of out-of-frame taps go to `fill` (scalar or (C,))."""
    h, w, ch = img.shape
    sx, sy = _source_coords(matrix, h, w)
    x0, y0 = jnp.floor(sx), jnp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    flat = img.reshape(h * w, ch)
    out, inside = 0.0, 0.0
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            ok = ((xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1))[..., None]
            idx = jnp.clip(yi, 0, h - 1).astype(jnp.int32) * w + jnp.clip(xi, 0, w - 1).astype(jnp.int32)
            wgt = jnp.where(ok, wx * wy, 0.0)
            out = out + wgt * jnp.take(flat, idx, axis=0)
            inside = inside + wgt
    return out + (1.0 - inside) * fill


def _nearest(lab, matrix, background):
    h, w = lab.shape
    sx, sy = _source_coords(matrix, h, w)
    xi, yi = jnp.floor(sx + 0.5), jnp.floor(sy + 0.5)
    ok = (xi >= 0) & (xi <= w - 1) & (yi >= 0) & (yi <= h - 1)
    idx = jnp.clip(yi, 0, h - 1).astype(jnp.int32) * w + jnp.clip(xi, 0, w - 1).astype(jnp.int32)
    return jnp.where(ok, jnp.take(lab.reshape(-1), idx), jnp.asarray(background, lab.dtype))


@jax.jit
def apply_affine(images, matrices, fill=0.0) -> jax.Array:
    """Warp images (N, H, W, C) by inverse maps (N, 2, 3), bilinear; out of frame -> `fill` (scalar or (C,)).
    Float images keep their dtype; integer ones come back float32."""
    images = jnp.asarray(images)
    dtype = images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.float32
    fill = jnp.asarray(fill, jnp.float32)
    out = jax.vmap(_bilinear, in_axes=(0, 0, None))(images.astype(jnp.float32), matrices, fill)
    return out.astype(dtype)


@jax.jit
def apply_affine_labels(labels, matrices, background: int = 0, flip_permutation=None) -> jax.Array:
    """Warp labels by inverse maps (N, 2, 3): integer maps (N, H, W) nearest-neighbour, probabilities
    (N, H, W, K) bilinear; out of frame -> `background` (one-hot for probabilities). Where a map is a
    mirror, class i becomes ``flip_permutation[i]``."""
    labels = jnp.asarray(labels)
    soft = jnp.issubdtype(labels.dtype, jnp.floating)
    if flip_permutation is not None:
        perm = jnp.asarray(flip_permutation, jnp.int32)
        mirror = is_mirror(matrices)
        if soft:
            # Class i's probability moves to channel perm[i]: new[..., perm[i]] = old[..., i].
            swapped = labels[..., jnp.argsort(perm)]
            labels = jnp.where(mirror[:, None, None, None], swapped, labels)
        else:
            labels = jnp.where(mirror[:, None, None], perm[labels].astype(labels.dtype), labels)
    if soft:
        onehot = jax.nn.one_hot(background, labels.shape[-1], dtype=jnp.float32)
        out = jax.vmap(_bilinear, in_axes=(0, 0, None))(labels.astype(jnp.float32), matrices, onehot)
        return out.astype(labels.dtype)
    return jax.vmap(_nearest, in_axes=(0, 0, None))(labels, matrices, background)


@functools.partial(jax.jit, static_argnames=('flip', 'log_scale'))
def augment(
    key,
    images,
    labels=None,
    *,
    flip: bool = True,
    scale=(0.5, 2.0),
    rotate: float = 10.0,
    translate: float = 0.5,
    background: int = 0,
    fill=0.0,
    flip_permutation=None,
    log_scale: bool = True,
):
    """Random per-example auto-shot augmentation of images (N, H, W, C) and labels (integer (N, H, W) or
    probabilities (N, H, W, K), or None). Returns (images, labels) warped by the same maps."""
    n, h, w = images.shape[:3]
    matrices = random_affine(
        key, n, h, w, flip=flip, scale=scale, rotate=rotate, translate=translate, log_scale=log_scale
    )
    out = apply_affine(images, matrices, fill)
    if labels is None:
        return out, None
    return out, apply_affine_labels(labels, matrices, background, flip_permutation)
