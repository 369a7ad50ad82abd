"""UNet segmenter for auto-shot segmentation and supervised baselines, and its data-parallel trainer.

The paper trains "a UNet described in our supplementary", which we do not have; this is
Ronneberger et al.'s UNet with two modernisations:
* `depth` down levels (default 4, as the original), widths base_width * 2**level (32 or 64 doubling;
  the original is 64 .. 1024), two 3x3 convs + norm + ReLU per level, 2x2 max-pool down, a 2x2
  stride-2 transposed conv ("up-convolution") up, skip concatenation, a 1x1 conv to the classes;
* 'same' zero padding instead of the original's valid convs, so the output has the input's size;
  any H, W is padded (zeros, bottom/right) to a multiple of 2**depth and the logits cropped back,
  so one model segments images of any size and aspect;
* GroupNorm rather than BatchNorm: it is per example, so there is no batch-statistics state, no
  train/eval difference, and the same result for a batch of 1 (the 1-shot baselines), a batch split
  over 8 devices, or a 1024 x 700 test image. norm_groups is clamped to divide each width.

On XLA:CPU convolutions inside loops (the lax.scan chunks of `train_simple`) are very slow, so the
3x3 convs are `gsd.nn.layers.Conv3x3` (im2col on CPU, XLA's conv elsewhere) and the up-convolution is a
matmul to the 4 sub-pixels followed by depth-to-space, which is the same operation. Measured on the
busy 2-core dev CPU, base_width 32, batch 32 of 64x64: a scanned step ~3 s of CPU with im2col and
over 30 s with XLA's conv; a standalone jitted step (`make_train_step`) 3.8 s with im2col and 2.3 s
with ``conv_impl='xla'``, which is therefore the better choice there on CPU.

Training (auto-shot, paper 4.3): Adam lr 1e-3, cross-entropy against integer labels or against
softmax(target logits) of the few-shot head, lr x 0.1 when the validation score has not improved
for 20 epochs (`Plateau`, applied through `TrainState.lr_scale` without recompiling).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import augment as augment_lib
from gsd.nn.layers import Conv3x3, torch_kernel_init
from gsd.training import parallel


class ConvBlock(nn.Module):
    """Two (3x3 conv, GroupNorm, ReLU)."""

    features: int
    norm_groups: int = 8
    dtype: Any = jnp.float32
    conv_impl: Optional[str] = None

    @nn.compact
    def __call__(self, x):
        groups = math.gcd(self.norm_groups, self.features)
        for i in range(2):
            x = Conv3x3(self.features, impl=self.conv_impl, name=f'conv{i}')(x.astype(self.dtype))
            x = nn.relu(nn.GroupNorm(num_groups=groups, dtype=self.dtype, name=f'norm{i}')(x))
        return x


class UpConv(nn.Module):
    """2x2 stride-2 transposed conv: each input pixel -> a 2x2 block of `features` (params (C, 2, 2, F), (F,))."""

    features: int

    @nn.compact
    def __call__(self, x):
        n, h, w, c = x.shape
        # Each output sums C inputs, hence fan_in = C (PyTorch-style uniform, as the 3x3 convs).
        init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform', in_axis=0, out_axis=(1, 2, 3))
        kernel = self.param('kernel', init, (c, 2, 2, self.features)).astype(x.dtype)
        bias = self.param('bias', nn.initializers.zeros, (self.features,))
        y = jnp.einsum('nhwc,cijf->nhiwjf', x, kernel)
        return y.reshape(n, 2 * h, 2 * w, self.features) + bias.astype(x.dtype)


def _max_pool2(x):
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class UNet(nn.Module):
    """Images (N, H, W, C) float (scaled to [-1, 1], see `preprocess`) -> logits (N, H, W, num_classes) float32."""

    num_classes: int
    base_width: int = 32
    depth: int = 4
    norm_groups: int = 8
    dtype: Any = jnp.float32  # compute dtype (bfloat16 on accelerators); params stay float32
    conv_impl: Optional[str] = None  # see gsd.nn.layers.Conv3x3

    @nn.compact
    def __call__(self, x):
        n, h, w, _ = x.shape
        mult = 2**self.depth
        x = jnp.pad(x, ((0, 0), (0, -h % mult), (0, -w % mult), (0, 0))).astype(self.dtype)
        block = functools.partial(ConvBlock, norm_groups=self.norm_groups, dtype=self.dtype, conv_impl=self.conv_impl)
        skips = []
        for level in range(self.depth):
            x = block(self.base_width * 2**level, name=f'down{level}')(x)
            skips.append(x)
            x = _max_pool2(x)
        x = block(self.base_width * 2**self.depth, name='bottom')(x)
        for level in reversed(range(self.depth)):
            x = UpConv(self.base_width * 2**level, name=f'upconv{level}')(x)
            x = block(self.base_width * 2**level, name=f'up{level}')(jnp.concatenate([skips[level], x], -1))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=torch_kernel_init, name='head')(x)
        return logits[:, :h, :w].astype(jnp.float32)


def preprocess(images_uint8):
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# Training


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    lr_scale: jax.Array  # multiplies the optimizer's updates; change it with `set_lr_scale`


def default_optimizer(lr: float = 1e-3) -> optax.GradientTransformation:
    return optax.adam(lr)


def create_state(model: UNet, tx, key, *, channels: int = 3, mesh: Optional[Mesh] = None) -> TrainState:
    """A fresh TrainState, replicated over `mesh` (parameters do not depend on the image size)."""
    return _init_program(model, tx, channels, mesh or parallel.mesh())(key)


@functools.lru_cache(maxsize=8)
def _init_program(model: UNet, tx, channels: int, mesh: Mesh):
    # Cached: runs with the same model and optimizer object compile the initialisation once.
    size = 2**model.depth

    def init(key):
        params = model.init(key, jnp.zeros((1, size, size, channels), jnp.float32))['params']
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), lr_scale=jnp.ones((), jnp.float32)
        )

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def set_lr_scale(state: TrainState, scale: float) -> TrainState:
    """A new lr scale with the old one's sharding, so the jitted step does not recompile."""
    return state.replace(lr_scale=jax.device_put(jnp.float32(scale), state.lr_scale.sharding))


def pixel_loss(logits, targets, soft: bool, class_weights=None):
    """Mean cross-entropy: integer targets (N, H, W), or probabilities (N, H, W, K) when `soft`.

    class_weights: K floats; a pixel counts with the weight of its target (the probability-weighted mean
    for soft targets) and the loss is the weighted mean, so rare classes (a toy nose is 1% of the pixels)
    pull as hard as their weight says. None: every pixel alike."""
    if not soft:
        # The same numbers as optax.softmax_cross_entropy_with_integer_labels, but its gradient is a
        # scatter-add into the logits, which XLA:CPU spent seconds constant-folding at 32x64x64; the
        # one-hot form's gradient is dense and costs K multiplies per pixel.
        targets = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
    ce = optax.softmax_cross_entropy(logits, targets)
    if class_weights is None:
        return ce.mean()
    w = targets.astype(jnp.float32) @ jnp.asarray(class_weights, jnp.float32)
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1e-6)


def balanced_class_weights(class_pixels, power: float) -> tuple[float, ...]:
    """Per-class loss weights share**-power (power 0: all 1; 0.5: inverse square root of the pixel share;
    1: inverse share), scaled so that a pixel drawn from `class_pixels` weighs 1 on average. A class with no
    pixel gets the largest weight of the others."""
    counts = np.asarray(class_pixels, np.float64)
    share = counts / max(counts.sum(), 1.0)
    seen = share > 0
    w = np.ones_like(share)
    w[seen] = share[seen] ** -float(power)
    w[~seen] = w[seen].max() if seen.any() else 1.0
    w /= max(float((w * share).sum()), 1e-12) if seen.any() else 1.0
    return tuple(float(v) for v in w)


def _step_body(model, tx, mesh, augment_fn, soft, class_weights=None) -> Callable:
    data = NamedSharding(mesh, P('data'))

    def shard(x):
        # A batch the devices cannot split evenly is left to XLA (each device computes it whole).
        return x if x.shape[0] % mesh.size else jax.lax.with_sharding_constraint(x, data)

    def body(state: TrainState, images, targets, key, weights=None):
        # weights: class weights as a traced argument (train_simple: each label set has its own, one program).
        weights = class_weights if weights is None else weights
        x = shard(preprocess(images))
        # Soft targets are logits (float16 is fine); augmentation and the loss work on probabilities.
        y = shard(jax.nn.softmax(targets.astype(jnp.float32), -1) if soft else targets.astype(jnp.int32))
        if augment_fn is not None:
            x, y = (shard(a) for a in augment_fn(key, x, y))

        def loss_fn(params):
            logits = model.apply({'params': params}, x)
            return pixel_loss(logits, y, soft, weights), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
        params = optax.apply_updates(state.params, updates)
        hard = jnp.argmax(y, -1) if soft else y
        metrics = {'loss': loss, 'accuracy': jnp.mean(jnp.argmax(logits, -1) == hard), 'finite': jnp.isfinite(loss)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return body


def make_train_step(
    model: UNet,
    tx,
    mesh: Optional[Mesh] = None,
    *,
    augment_fn: Optional[Callable] = None,
    soft: bool = False,
    class_weights: Optional[tuple[float, ...]] = None,
):
    """Jitted ``(state, images_uint8 (N, H, W, C), targets, key) -> (state, metrics)``.

    Images and targets are sharded along the batch over `mesh`'s 'data' axis (N divisible by its
    size), state and metrics replicated, so 1 or 8 devices give the same numbers. targets: integer
    labels (N, H, W), or with ``soft`` target logits (N, H, W, K), any float dtype, learnt as
    softmax(targets). augment_fn(key, images, labels) -> (images, labels) runs on device after the
    uint8 -> [-1, 1] conversion, on integer labels or probabilities, e.g.
    ``functools.partial(gsd.augment.augment, flip_permutation=...)``. class_weights: see `pixel_loss`
    (`balanced_class_weights`). The state is donated; keep it
    replicated over `mesh` (as `create_state`, the step and `set_lr_scale` leave it) or the step compiles again.
    """
    mesh = mesh or parallel.mesh()
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        _step_body(model, tx, mesh, augment_fn, soft, class_weights),
        donate_argnums=0,
        out_shardings=(replicated, replicated),
    )


class Plateau:
    """ReduceLROnPlateau on the host: call `update(score)` once per epoch, get the lr scale back.

    As torch.optim.lr_scheduler.ReduceLROnPlateau (which the authors' PyTorch code would use): the
    scale is multiplied by `factor` once more than `patience` epochs in a row failed to improve on
    the best score by a relative `threshold`, and the count restarts.
    """

    def __init__(
        self,
        patience: int = 20,
        factor: float = 0.1,
        mode: str = 'max',
        threshold: float = 1e-4,
        min_scale: float = 0.0,
    ):
        if mode not in ('max', 'min'):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.factor, self.mode = patience, factor, mode
        self.threshold, self.min_scale = threshold, min_scale
        self.best: Optional[float] = None
        self.bad_epochs = 0
        self.scale = 1.0

    def _improved(self, score: float) -> bool:
        if self.best is None:
            return True
        margin = self.threshold * abs(self.best)
        return score > self.best + margin if self.mode == 'max' else score < self.best - margin

    def update(self, score: float) -> float:
        score = float(score)
        if self._improved(score):
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale = max(self.scale * self.factor, self.min_scale)
                self.bad_epochs = 0
        return self.scale


# ---------------------------------------------------------------------------------------------
# Inference and small supervised runs


@functools.partial(jax.jit, static_argnames=('model', 'output'))
def _predict_batch(model, params, images, output):
    logits = model.apply({'params': params}, preprocess(images))
    if output == 'labels':
        return jnp.argmax(logits, -1).astype(jnp.int32)
    return jax.nn.softmax(logits, -1) if output == 'probs' else logits


def predict(model: UNet, params, images_uint8, batch_size: int = 32, *, output: str = 'logits') -> np.ndarray:
    """Run the UNet on uint8 images (N, H, W, C) or (H, W, C) of any size, `batch_size` at a time.

    output: 'logits' (float32, (..., K)), 'probs' or 'labels' (int32). Each image size (and model)
    compiles once; the last batch is padded to `batch_size`, so N does not add compilations.
    """
    if output not in ('logits', 'probs', 'labels'):
        raise ValueError(f"output must be 'logits', 'probs' or 'labels', got {output!r}")
    images = np.asarray(images_uint8)
    single = images.ndim == 3
    images = images[None] if single else images
    batch_size = min(batch_size, images.shape[0])
    result = parallel.map_padded(lambda chunk: _predict_batch(model, params, chunk, output), (images,), batch_size)
    return result[0] if single else result


@functools.lru_cache(maxsize=8)
def _chunk_runner(model: UNet, lr: float, mesh: Mesh, batch_size: int, soft: bool, aug: Optional[tuple]):
    """(optimizer, jitted scan over `length` steps) for `train_simple`, cached so that runs with equal
    settings (the 1- and 10-shot baselines) share one compiled program; class weights (None or (K,)) are an
    argument, not a constant, so balanced runs on other label sets share it too."""
    tx = default_optimizer(lr)
    augment_fn = None
    if aug is not None:
        flip, scale, rotate, translate, background, flip_permutation, log_scale = aug
        augment_fn = functools.partial(
            augment_lib.augment,
            flip=flip,
            scale=scale,
            rotate=rotate,
            translate=translate,
            background=background,
            flip_permutation=flip_permutation,
            log_scale=log_scale,
        )
    body = _step_body(model, tx, mesh, augment_fn, soft)

    @functools.partial(jax.jit, static_argnames='length', donate_argnums=0, out_shardings=NamedSharding(mesh, P()))
    def run_chunk(state, key, images, labels, count, weights, length):
        def one(state, k):
            k_idx, k_aug = jax.random.split(k)
            idx = jax.random.randint(k_idx, (batch_size,), 0, count)
            return body(state, images[idx], labels[idx], k_aug, weights)

        return jax.lax.scan(one, state, jax.random.split(key, length))

    return tx, run_chunk


def train_simple(
    images,
    labels,
    *,
    num_classes: int,
    steps: int,
    batch_size: int = 8,
    seed: int = 0,
    base_width: int = 32,
    depth: int = 4,
    norm_groups: int = 8,
    lr: float = 1e-3,
    augment: bool = True,
    flip: bool = True,
    scale=(0.5, 2.0),
    rotate: float = 10.0,
    translate: float = 0.5,
    background: int = 0,
    flip_permutation=None,
    log_scale: bool = True,
    chunk: int = 50,
    mesh: Optional[Mesh] = None,
    dtype: Any = jnp.float32,
    conv_impl: Optional[str] = None,
    rng_impl: Optional[str] = None,
    pad_to: Optional[int] = None,
    class_balance: float = 0.0,
    on_chunk: Optional[Callable] = None,
):
    """Train `UNet(num_classes, base_width, depth, norm_groups, dtype)` from scratch on a few labelled
    images: uint8 (N, H, W, C) with integer labels (N, H, W) or target logits (N, H, W, K) (soft).
    Each step draws `batch_size` images uniformly with replacement and augments them (paper's
    auto-shot augmentation unless ``augment=False``). Steps run in jitted `lax.scan` chunks of
    `chunk`, so the host only loops over chunks. rng_impl: jax.random.key's impl ('rbg' compiles the
    initialisation several times faster on XLA:CPU than the default threefry). pad_to: pad the image
    set with unused zeros to this many, so runs on different numbers of images (1-shot and 10-shot
    baselines) share one compiled program. class_balance: the power of `balanced_class_weights`, from
    these labels' class shares (0: plain cross-entropy). on_chunk(steps_done, params): called after each
    chunk (a learning curve on held-out images, say; it costs a host round trip per chunk). Returns the params."""
    mesh = mesh or parallel.mesh()
    model = UNet(num_classes, base_width, depth, norm_groups, dtype, conv_impl)
    key_init, key_run = jax.random.split(jax.random.key(seed, impl=rng_impl))
    soft = np.ndim(labels) == 4
    aug = (
        (
            flip,
            tuple(scale),
            rotate,
            translate,
            background,
            None if flip_permutation is None else tuple(int(v) for v in flip_permutation),
            log_scale,
        )
        if augment
        else None
    )
    weights = None
    if class_balance:
        if soft:  # target logits: the shares of their softmax
            z = np.asarray(labels, np.float64).reshape(-1, num_classes)
            e = np.exp(z - z.max(-1, keepdims=True))
            shares = (e / e.sum(-1, keepdims=True)).sum(0)
        else:
            shares = np.bincount(np.asarray(labels).reshape(-1), minlength=num_classes)
        weights = np.asarray(balanced_class_weights(shares, class_balance), np.float32)
    tx, run_chunk = _chunk_runner(model, lr, mesh, batch_size, soft, aug)
    state = create_state(model, tx, key_init, channels=images.shape[-1], mesh=mesh)
    images, labels = np.asarray(images), np.asarray(labels)
    count = images.shape[0]
    if pad_to is not None and pad_to > count:
        pad = ((0, pad_to - count),)
        images = np.pad(images, pad + ((0, 0),) * (images.ndim - 1))
        labels = np.pad(labels, pad + ((0, 0),) * (labels.ndim - 1))
    images, labels, count = jax.device_put((images, labels, np.int32(count)), NamedSharding(mesh, P()))

    done = 0
    while done < steps:
        length = min(chunk, steps - done)
        state, _ = run_chunk(state, jax.random.fold_in(key_run, done), images, labels, count, weights, length)
        done += length
        if on_chunk is not None:
            on_chunk(done, state.params)
    return state.params
