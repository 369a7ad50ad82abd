"""Image -> w+ encoder for a StyleGAN2 generator: the start of a short projection (hybrid inversion).

Optimisation-based projection (`gsd.projection`) starts every image at w_avg and needs hundreds of
steps to travel to it; an encoder (In-Domain GAN Inversion, pSp, e4e, ReStyle) predicts w+ in one
forward pass, close enough that a few dozen projection steps finish the job. This one is small (a
residual conv tower 64 -> 4 px with GroupNorm, then two dense layers) and predicts w+ as
w_avg + delta with the last layer zero-initialised, so an untrained encoder returns w_avg exactly: the
projection's usual start, never a worse one. Noise maps are left to the projection (they hold
per-image detail that the few steps fit quickly; predicting them would need a decoder per map).

`train_step` fits it on the generator's own samples, drawn inside the jitted step: z -> w through the
mapping network with a truncation psi drawn per sample and style mixing, so that w+ (rows from
different z) is covered, not just w. The loss is the mean squared error in w+ (normalised by the
spread of w) plus, weighted by `pixel_weight`, the pixel pyramid distance between the generator's
images of the predicted and the true w+ (it weighs the rows by what they change in the image).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from gsd import projection


def _groups(channels: int, groups: int) -> int:
    # The largest group count <= `groups` that divides the width.
    return math.gcd(channels, groups)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, 3x3 conv) x 2, with a stride-2 first conv and a
    strided 1x1 shortcut when it downsamples."""

    channels: int
    stride: int
    groups: int

    @nn.compact
    def __call__(self, x):
        h = nn.silu(nn.GroupNorm(_groups(x.shape[-1], self.groups))(x))
        h = nn.Conv(self.channels, (3, 3), strides=self.stride, padding=1)(h)
        h = nn.silu(nn.GroupNorm(_groups(self.channels, self.groups))(h))
        h = nn.Conv(self.channels, (3, 3), padding=1)(h)
        if self.stride != 1 or x.shape[-1] != self.channels:
            x = nn.Conv(self.channels, (1, 1), strides=self.stride)(x)
        return x + h


class Encoder(nn.Module):
    """uint8-range images (N, R, R, 3) mapped to [-1, 1] -> w+ (N, num_ws, w_dim) = w_avg + delta.

    widths: one residual block per entry, each halving the size (R -> R / 2**len(widths)); then the
    final feature map is flattened into `hidden` units and a zero-initialised dense layer gives delta.
    `w_avg` (w_dim,) is an argument, not a parameter: it is the generator's, read where it is used.
    """

    num_ws: int
    w_dim: int
    widths: Sequence[int] = (32, 64, 96, 128)
    hidden: int = 256
    groups: int = 8

    @nn.compact
    def __call__(self, images, w_avg):
        x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
        x = nn.Conv(self.widths[0], (3, 3), padding=1)(x)
        for width in self.widths:
            x = ResBlock(width, 2, self.groups)(x)
        x = nn.silu(nn.GroupNorm(_groups(x.shape[-1], self.groups))(x))
        x = nn.silu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
        delta = nn.Dense(self.num_ws * self.w_dim, kernel_init=nn.initializers.zeros)(x)
        return w_avg + delta.reshape(-1, self.num_ws, self.w_dim)


def for_generator(G, widths: Sequence[int] = (32, 64, 96, 128), hidden: int = 256, groups: int = 8) -> Encoder:
    """The encoder of w+ for generator module G (its num_ws and w_dim)."""
    return Encoder(G.num_ws, G.w_dim, tuple(widths), hidden, groups)


def init_params(encoder: Encoder, key, resolution: int):
    return encoder.init(key, jnp.zeros((1, resolution, resolution, 3)), jnp.zeros((encoder.w_dim,)))['params']


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the generated training samples cover and how the loss weighs them."""

    psi_min: float = 0.5  # truncation psi drawn uniformly in [psi_min, psi_max] per sample
    psi_max: float = 1.0
    mixing_prob: float = 0.5  # share of samples whose rows >= a random cutoff come from a second z
    pixel_weight: float = 1.0  # weight of the pixel pyramid loss through the generator (0: w loss only)


def optimizer(lr: float, total_steps: int) -> optax.GradientTransformation:
    # Cosine decay to 1% over the run: the last steps polish instead of jumping around.
    return optax.adam(optax.cosine_decay_schedule(lr, max(total_steps, 1), alpha=0.01))


def create_state(encoder: Encoder, tx, key, resolution: int) -> TrainState:
    k_init, k_data = jax.random.split(key)
    params = init_params(encoder, k_init, resolution)
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), k_data)


def generated_batch(G, g_vars, keys, recipe: Recipe):
    """(w+ (B, num_ws, w_dim), images uint8-range float (B, R, R, 3)) of the generator for per-sample PRNG
    keys (B, 2), traceable: sample i depends on keys[i] alone, not on the batch it is drawn in.

    The images are rounded to the 256 levels a real image has, so the encoder sees what it will be given."""

    def draws(key):
        kz, kz2, kpsi, kmix, kcut = jax.random.split(key, 5)
        cut = jax.random.randint(kcut, (), 1, G.num_ws)
        return (
            jax.random.normal(kz, (G.z_dim,)),
            jax.random.normal(kz2, (G.z_dim,)),
            jnp.where(jax.random.uniform(kmix) < recipe.mixing_prob, cut, G.num_ws),
            jax.random.uniform(kpsi, minval=recipe.psi_min, maxval=recipe.psi_max),
        )

    z, z2, cut, psi = jax.vmap(draws)(keys)
    rows = jnp.arange(G.num_ws)[None, :, None]
    ws = jnp.where(rows < cut[:, None, None], G.apply(g_vars, z, method='map'), G.apply(g_vars, z2, method='map'))
    w_avg = g_vars['buffers']['mapping']['w_avg']  # the generator's own truncation centre
    ws = w_avg + psi[:, None, None] * (ws - w_avg)
    images = G.apply(g_vars, ws, noise_mode='const', method='synthesize')
    return ws, jnp.clip(jnp.round(images * 127.5 + 128.0), 0.0, 255.0)


def train_step(
    encoder: Encoder, G, tx, recipe: Recipe, state: TrainState, indices, g_vars, w_avg, w_std
) -> tuple[TrainState, dict]:
    """One Adam step on the generated samples `indices` (B,) of the state's key (pure; jit with encoder, G,
    tx and recipe static). Sample i is drawn from fold_in(key, i): a resumed run sees the same samples."""
    keys = jax.vmap(lambda i: jax.random.fold_in(state.key, i))(indices)
    ws_true, images = generated_batch(G, g_vars, keys, recipe)
    pixel = projection.PixelPyramidLoss()
    target_features = pixel.features(images / 127.5 - 1.0)
    # w_std is the root of the summed squared spread over w's dimensions: per dimension it is w_std**2 / w_dim.
    w_scale = jnp.square(w_std) / encoder.w_dim

    def loss_fn(params):
        ws = encoder.apply({'params': params}, images, w_avg)
        w_loss = jnp.mean(jnp.square(ws - ws_true)) / w_scale
        total = w_loss
        metrics = {'loss/w': w_loss}
        if recipe.pixel_weight > 0:
            recon = G.apply(g_vars, ws, noise_mode='const', method='synthesize')
            pix = jnp.mean(pixel.distance(pixel.features(recon), target_features))
            total = total + recipe.pixel_weight * pix
            metrics['loss/pixel'] = pix
        return total, metrics

    (total, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, **{'loss/total': total, 'finite': jnp.isfinite(total)})
    return TrainState(state.step + 1, params, opt_state, state.key), metrics


@dataclasses.dataclass(eq=False)
class TrainedEncoder:
    """A trained encoder with its parameters and the generator's w_avg: uint8 images -> w+ (numpy)."""

    encoder: Encoder
    params: Any
    w_avg: Any
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self._apply = jax.jit(lambda p, x, w: self.encoder.apply({'params': p}, x, w))

    def __call__(self, images_uint8):
        return self._apply(self.params, jnp.asarray(images_uint8), self.w_avg)
