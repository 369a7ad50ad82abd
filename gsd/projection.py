"""Projection: find the w (or w+) and noise maps with which a StyleGAN2 generator reproduces given images.

The recipe of the StyleGAN2 papers (NVIDIA's projector; rosinality's uses the same constants):
Adam (0.9, 0.999) at lr 0.1 with a linear ramp-up over the first 5% of the steps and a cosine
ramp-down over the last 25%; start from w_avg (the mean of 10,000 mapped z) plus latent noise of std
w_std * 0.05 * max(0, 1 - t / 0.75)^2 that anneals away; random noise maps optimised too, kept
white by an autocorrelation penalty (weight 1e5) over a pyramid down to 8x8 and re-normalised to
zero mean / unit variance after every step; loss = perceptual distance + that penalty.

All B images are optimised together in one compiled program (a `lax.scan` over the steps; on CPU the
step is compiled alone and dispatched per step, see `_stepped`), each
image independently: per-image losses are summed, so no gradient mixes images, and Adam acts
per element. The program is cached on (generator, loss type, shapes, steps, optimize_noise), so
calling again with new targets, another space or new hyperparameter values compiles nothing.

Perceptual losses are pytrees (their weights are traced arguments, not constants baked into the
program) with ``features(images)`` and ``distance(features_a, features_b) -> (B,)``, so the
targets' features are computed once: :class:`PixelPyramidLoss` (the default, no download) and
:class:`LPIPS` (VGG16 + LPIPS v0.1 weights read from the user's files).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence, Union

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from gsd.features import resize_axis
from gsd.io.images import to_uint8
from gsd.stylegan2.networks import Generator, noise_layer_names
from gsd.stylegan2.readers import CheckpointError, read_checkpoint_file

SPACES = ('w', 'w+')
LOOPS = ('auto', 'scan', 'host')
# z samples behind w_avg / w_std come from a fixed key (the reference uses RandomState(123)), not from
# `seed`: every call then starts from the same w_avg.
W_STATS_SEED = 123
LPIPS_MAX_SIZE = 256
NOISE_PYRAMID_MIN = 8
INITIAL_NOISE_FACTOR = 0.05  # the reference's latent noise (x w_std) when starting from w_avg
# From an encoder's w+ (init_ws): none. Measured with the shipped toy encoder, 40 steps at lr 0.1 on
# validation real toy images: 0.05 gave 22.0 dB (the scripted annotator refused 40 of 50), 0.0 gave
# 23.7 dB (54 of 100 refused): the noise throws away part of the encoder's start.
HYBRID_NOISE_FACTOR = 0.0

# torchvision vgg16 `features.N` convs feeding each LPIPS tap (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
VGG16_TAPS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_FILES_HELP = (
    "LPIPS needs two weight files, which are not downloaded here: torchvision's ImageNet VGG16 "
    "(vgg16-397923af.pth, a state_dict with features.N.weight/bias) and the lpips package's v0.1 "
    'linear layers (lpips/weights/v0.1/vgg.pth, keys lin0..lin4.model.1.weight); pass '
    'vgg16_path= and lpips_path=, or vgg16_path= alone for one .npz holding both key sets'
)


def _avg_pool2(x, axes=(1, 2)):
    """2x2 box average over `axes` (odd sizes drop their last row/column, as avg_pool2d does)."""
    for a in axes:
        n = x.shape[a] // 2
        x = jax.lax.slice_in_dim(x, 0, 2 * n, axis=a)
        x = jnp.mean(x.reshape(x.shape[:a] + (n, 2) + x.shape[a + 1 :]), axis=a + 1)
    return x


@jax.jit
def _call(loss, a, b):
    return loss.distance(loss.features(a), loss.features(b))


@flax.struct.dataclass
class PixelPyramidLoss:
    """Mean absolute difference of Laplacian pyramids (2x2 box averages down to `min_size` px), summed.

    The default because it needs no weights (LPIPS needs VGG16 ImageNet weights, not downloadable
    here) and projects well wherever the target is a generator output or close to one (the toy world,
    synthetic images, small resolutions). Measured on a partly trained toy-world generator (64 px, 4 of
    its own images, 300 steps, space 'w'): 38-47 dB PSNR, w 1.1-2.5x closer to the truth than with
    squared error (35-39 dB, the same summed over a box or a Laplacian pyramid); L1 on the box pyramid
    gave 38-45 dB. Squared error stops pulling once the large residuals are gone (its gradient shrinks
    with them); L1 keeps every pixel's residual in play, and the band-pass levels keep coarse layout
    from drowning in detail. On real toy images that generator cannot reproduce all of these scored
    about 20 dB. Unlike LPIPS it scores exact pixels, so on real photos (misaligned, off the
    generator's manifold) it settles for a blurry compromise where LPIPS prefers sharp, perceptually
    similar texture. Images are in [-1, 1]; between unrelated toy images the distance is 0.5-1.0, of
    LPIPS's order, so the reference's lr 0.1 and noise weight 1e5 keep their balance.
    """

    min_size: int = flax.struct.field(pytree_node=False, default=8)

    def features(self, images):
        x = jnp.asarray(images, jnp.float32)
        bands = []
        while min(x.shape[1:3]) >= 2 * self.min_size and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
            coarse = _avg_pool2(x)
            bands.append(x - jnp.repeat(jnp.repeat(coarse, 2, axis=1), 2, axis=2))
            x = coarse
        return tuple(bands) + (x,)

    def distance(self, fa, fb):
        return sum(jnp.mean(jnp.abs(a - b), axis=(1, 2, 3)) for a, b in zip(fa, fb))

    def __call__(self, images_a, images_b):
        return _call(self, images_a, images_b)


@flax.struct.dataclass
class LPIPS:
    """LPIPS (v0.1, VGG16) as the lpips package computes it, on NHWC images in [-1, 1].

    convs: per tap, ((weight HWIO, bias), ...); lins: per tap, the (C,) linear-layer weights.
    """

    convs: tuple
    lins: tuple
    precision: Any = flax.struct.field(pytree_node=False, default=None)

    @classmethod
    def from_files(cls, vgg16_path, lpips_path=None, precision=None) -> 'LPIPS':
        """torch .pth files (read by gsd's restricted readers: no torch, no code from the file) or .npz with
        the same key names; with `lpips_path` None, `vgg16_path` must hold the lin weights as well."""
        vgg = _read_state(vgg16_path)
        lin_path, lin = (vgg16_path, vgg) if lpips_path is None else (lpips_path, _read_state(lpips_path))
        convs, cin = [], 3
        for tap in VGG16_TAPS:
            block = []
            for i in tap:
                w = _tensor(vgg16_path, vgg, f'features.{i}.weight', (None, cin, 3, 3))
                b = _tensor(vgg16_path, vgg, f'features.{i}.bias', (w.shape[0],))
                block.append((jnp.asarray(w.transpose(2, 3, 1, 0)), jnp.asarray(b)))  # OIHW -> HWIO
                cin = w.shape[0]
            convs.append(tuple(block))
        lins = tuple(
            jnp.asarray(_tensor(lin_path, lin, f'lin{k}.model.1.weight', (1, block[-1][0].shape[-1], 1, 1)).reshape(-1))
            for k, block in enumerate(convs)
        )
        return cls(tuple(convs), lins, precision)

    def features(self, images):
        x = jnp.asarray(images, jnp.float32)
        if min(x.shape[1:3]) < 16:
            raise ValueError(f'LPIPS needs images of at least 16 px (VGG16 halves them 4 times), got {x.shape}')
        if max(x.shape[1:3]) > LPIPS_MAX_SIZE:  # VGG was trained at 224 px: area-downsample larger images
            f = LPIPS_MAX_SIZE / max(x.shape[1:3])
            x = resize_axis(resize_axis(x, 1, round(x.shape[1] * f)), 2, round(x.shape[2] * f))
        x = (x - jnp.asarray(LPIPS_SHIFT)) / jnp.asarray(LPIPS_SCALE)
        taps = []
        for k, block in enumerate(self.convs):
            if k:
                x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), 'VALID')
            for w, b in block:
                x = jax.nn.relu(
                    jax.lax.conv_general_dilated(
                        x, w, (1, 1), 'SAME', precision=self.precision, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
                    )
                    + b
                )
            norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
            taps.append(x / (norm + 1e-10))
        return tuple(taps)

    def distance(self, fa, fb):
        return sum(
            jnp.mean(jnp.einsum('nhwc,c->nhw', jnp.square(a - b), lin, precision=self.precision), axis=(1, 2))
            for a, b, lin in zip(fa, fb, self.lins)
        )

    def __call__(self, images_a, images_b):
        return _call(self, images_a, images_b)


def _read_state(path) -> dict:
    kind, obj = read_checkpoint_file(path)  # CheckpointError '<path>: <problem>' on a missing/corrupt file
    if kind not in ('torch', 'npz') or not isinstance(obj, dict):
        raise CheckpointError(f'{path}: holds a {kind} {type(obj).__name__}, not a state_dict of tensors')
    return obj


def _tensor(path, state, key, shape) -> np.ndarray:
    """state[key] as float32, checked against `shape` (None = any size there)."""
    if key not in state:
        raise CheckpointError(f'{path}: missing tensor {key!r}')
    a = np.asarray(state[key])
    if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
        want = tuple('*' if s is None else s for s in shape)
        raise CheckpointError(f'{path}: tensor {key!r} has shape {a.shape}, expected {want}')
    if a.dtype.kind != 'f' or not np.all(np.isfinite(a)):
        raise CheckpointError(f'{path}: tensor {key!r} is not finite floating point ({a.dtype})')
    return a.astype(np.float32)


def make_perceptual(kind: str = 'pixel', vgg16_path=None, lpips_path=None):
    """'pixel' -> PixelPyramidLoss(); 'lpips' -> LPIPS.from_files(vgg16_path, lpips_path)."""
    if kind == 'pixel':
        return PixelPyramidLoss()
    if kind == 'lpips':
        if vgg16_path is None:
            raise ValueError(LPIPS_FILES_HELP)
        return LPIPS.from_files(vgg16_path, lpips_path)
    raise ValueError(f"perceptual kind must be 'pixel' or 'lpips', got {kind!r}")


def psnr(images_a, images_b) -> np.ndarray:
    """Per-image PSNR in dB (peak 255) of two uint8 batches (B, H, W, C); inf where they are equal."""
    a, b = np.asarray(images_a), np.asarray(images_b)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape:
        raise ValueError(f'psnr takes two uint8 batches of one shape, got {a.dtype}{a.shape}, {b.dtype}{b.shape}')
    mse = np.mean(np.square(a.astype(np.float64) - b.astype(np.float64)), axis=tuple(range(1, a.ndim)))
    with np.errstate(divide='ignore'):
        return 10.0 * np.log10(255.0**2 / mse)


def noise_regularizer(noise: dict):
    """Per image (B,): squared autocorrelation at shift 1 in x and y of every (B, R, R) map, summed over a
    2x2-average pyramid down to 8x8. Penalises noise maps that smuggle image structure."""
    total = 0.0
    for n in noise.values():
        while True:
            for axis in (1, 2):
                total = total + jnp.square(jnp.mean(n * jnp.roll(n, 1, axis=axis), axis=(1, 2)))
            if n.shape[1] <= NOISE_PYRAMID_MIN:
                break
            n = _avg_pool2(n)
    return total


def _normalized(noise: dict) -> dict:
    def one(n):
        n = n - jnp.mean(n, axis=(1, 2), keepdims=True)
        return n * jax.lax.rsqrt(jnp.mean(jnp.square(n), axis=(1, 2), keepdims=True))

    return {k: one(n) for k, n in noise.items()}


@dataclasses.dataclass
class ProjectionResult:
    """What `project` found, per image; synthesize(ws, noise=noise) reproduces `images`."""

    ws: np.ndarray  # (B, num_ws, w_dim) float32; all rows equal for space 'w'
    noise: dict  # {'b8.conv0': (B, 8, 8), ...} float32 (the const buffers if not optimised)
    images: np.ndarray  # (B, H, W, 3) uint8: the generator's output for ws and noise
    psnr: np.ndarray  # (B,) dB against the targets at the generator's resolution
    loss: np.ndarray  # (B,) perceptual + noise_weight * regulariser at the result
    loss_history: np.ndarray  # (steps, B) the loss each step optimised (with latent noise)


def w_statistics(G: Generator, variables, samples: int = 10000):
    """(w_avg (w_dim,), w_std scalar) over `samples` mapped z: w_std = sqrt(mean squared distance to w_avg),
    summed over the w dimensions, as the reference projectors define it (the latent noise's scale)."""
    z = jax.random.normal(jax.random.PRNGKey(W_STATS_SEED), (samples, G.z_dim))
    w = G.apply(variables, z, method=lambda m, z: m.mapping(z))
    w_avg = jnp.mean(w, axis=0)
    return w_avg, jnp.sqrt(jnp.sum(jnp.square(w - w_avg)) / samples)


def _lr_factor(t, rampup, rampdown):
    down = 0.5 - 0.5 * jnp.cos(jnp.pi * jnp.minimum(1.0, (1.0 - t) / jnp.maximum(rampdown, 1e-12)))
    up = jnp.where(rampup > 0, jnp.minimum(1.0, t / jnp.maximum(rampup, 1e-12)), 1.0)
    return down * up


def _parts(loss, static_loss):
    loss = static_loss if static_loss is not None else loss
    return loss, getattr(loss, 'features', lambda x: x), getattr(loss, 'distance', loss)


def _optimizer(hp, steps: int):
    return optax.adam(
        lambda count: hp['lr'] * _lr_factor(count / steps, hp['lr_rampup'], hp['lr_rampdown']), b1=0.9, b2=0.999
    )


def _init(G, variables, targets, loss, static_loss, hp, seeds, init_ws, *, steps, optimize_noise, w_avg_samples):
    """-> (carry = (params, opt_state), ctx = everything the steps read)."""
    loss, features, _ = _parts(loss, static_loss)
    key_init, key_latent = jnp.moveaxis(jax.vmap(lambda s: jax.random.split(jax.random.PRNGKey(s)))(seeds), 1, 0)
    w_avg, w_std = w_statistics(G, variables, w_avg_samples)
    out_shape = jax.eval_shape(lambda: G.apply(variables, w_avg[None], method='synthesize')).shape
    target = targets.astype(jnp.float32) / 127.5 - 1.0  # bin centres of to_uint8's x * 127.5 + 128
    target = resize_axis(
        resize_axis(target, 1, out_shape[1], align_corners=False), 2, out_shape[2], align_corners=False
    )
    batch = targets.shape[0]
    if init_ws is None:
        params = {'w': jnp.broadcast_to(w_avg, (batch, G.num_ws, G.w_dim))}
    else:  # hybrid inversion: an encoder's w+ (tied rows for space 'w': their mean)
        w0 = jnp.asarray(init_ws, jnp.float32)
        params = {'w': jnp.where(hp['tied'] > 0, jnp.broadcast_to(jnp.mean(w0, axis=1, keepdims=True), w0.shape), w0)}
    fixed_noise = {}
    for i, name in enumerate(noise_layer_names(G.resolution)):
        block, conv = name.split('.')
        if optimize_noise:
            res = int(block[1:])
            params.setdefault('noise', {})[name] = jax.vmap(
                lambda k: jax.random.normal(jax.random.fold_in(k, i), (res, res))
            )(key_init)
        else:  # the generator's own const noise: the result then reproduces with noise_mode='const'
            fixed_noise[name] = variables['buffers']['synthesis'][block][conv]['noise_const']
    ctx = dict(
        variables=variables,
        loss=loss if static_loss is None else None,
        hp=hp,
        target=target,
        target_features=features(target),
        w_std=w_std,
        key_latent=key_latent,
        fixed_noise=fixed_noise,
    )
    return (params, _optimizer(hp, steps).init(params)), ctx


def _per_image(G, static_loss, ctx, params, w_noise, optimize_noise):
    _, features, distance = _parts(ctx['loss'], static_loss)
    ws = params['w'] + w_noise
    noise = params.get('noise', ctx['fixed_noise'])
    images = G.apply(ctx['variables'], ws, noise=noise, method='synthesize')
    value = distance(features(images), ctx['target_features'])
    if optimize_noise:
        value = value + ctx['hp']['noise_weight'] * noise_regularizer(noise)
    return value, (ws, images)


def _step(G, static_loss, ctx, carry, i, *, steps, optimize_noise):
    """One Adam step of every image: -> (carry, per-image loss (B,))."""
    params, opt_state = carry
    hp = ctx['hp']
    # Space 'w' is w+ with tied rows: each row gets the rows' summed gradient (the gradient w.r.t. the one
    # shared w) and the same latent noise, so Adam, acting per element, keeps the rows equal. Both spaces
    # then share one compiled program.
    tied = hp['tied'] > 0
    ramp = jnp.maximum(0.0, 1.0 - (i / steps) / jnp.maximum(hp['noise_ramp_length'], 1e-12))
    scale = ctx['w_std'] * hp['initial_noise_factor'] * jnp.square(ramp)
    w_shape = params['w'].shape
    w_noise = scale * jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), w_shape[1:]))(ctx['key_latent'])
    w_noise = jnp.where(tied, w_noise[:, :1], w_noise)

    def total(p):  # summed per-image losses: each image's gradient is its own loss's gradient
        values = _per_image(G, static_loss, ctx, p, w_noise, optimize_noise)[0]
        return jnp.sum(values), values

    (_, values), grads = jax.value_and_grad(total, has_aux=True)(params)
    grads['w'] = jnp.where(tied, jnp.sum(grads['w'], axis=1, keepdims=True), grads['w'])
    updates, opt_state = _optimizer(hp, steps).update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if optimize_noise:
        params = dict(params, noise=_normalized(params['noise']))
    return (params, opt_state), values


def _finish(G, static_loss, ctx, carry, *, optimize_noise):
    params = carry[0]
    final, (ws, images) = _per_image(G, static_loss, ctx, params, 0.0, optimize_noise)
    batch = ws.shape[0]
    noise = params.get('noise', {k: jnp.broadcast_to(n, (batch,) + n.shape) for k, n in ctx['fixed_noise'].items()})
    return dict(ws=ws, noise=noise, images=images, loss=final, target=ctx['target'])


_STATIC = ('G', 'static_loss', 'steps', 'optimize_noise', 'w_avg_samples')
_STEP_STATIC = ('G', 'static_loss', 'steps', 'optimize_noise')
_FINISH_STATIC = ('G', 'static_loss', 'optimize_noise')


@functools.partial(jax.jit, static_argnames=_STATIC)
def _program(G, variables, targets, loss, static_loss, hp, seeds, init_ws, *, steps, optimize_noise, w_avg_samples):
    """The whole optimisation as one program (a lax.scan over the steps)."""
    carry, ctx = _init(
        G,
        variables,
        targets,
        loss,
        static_loss,
        hp,
        seeds,
        init_ws,
        steps=steps,
        optimize_noise=optimize_noise,
        w_avg_samples=w_avg_samples,
    )
    step = functools.partial(_step, G, static_loss, ctx, steps=steps, optimize_noise=optimize_noise)
    carry, history = jax.lax.scan(step, carry, jnp.arange(steps))
    return dict(_finish(G, static_loss, ctx, carry, optimize_noise=optimize_noise), history=history)


_init_program = jax.jit(_init, static_argnames=_STATIC)
_step_program = jax.jit(_step, static_argnames=_STEP_STATIC, donate_argnums=3)
_finish_program = jax.jit(_finish, static_argnames=_FINISH_STATIC)


def _stepped(G, variables, targets, loss, static_loss, hp, seeds, init_ws, *, steps, optimize_noise, w_avg_samples):
    """The same optimisation with the step as its own compiled program, driven from Python. XLA:CPU runs
    convolutions inside a while loop (a lax.scan body) about 3x slower than the same step compiled on
    its own (measured on the toy generator), so on CPU the host dispatches each step; nothing is read
    back until the end, so the steps still queue asynchronously."""
    carry, ctx = _init_program(
        G,
        variables,
        targets,
        loss,
        static_loss,
        hp,
        seeds,
        init_ws,
        steps=steps,
        optimize_noise=optimize_noise,
        w_avg_samples=w_avg_samples,
    )
    history = []
    for i in range(steps):
        carry, values = _step_program(
            G, static_loss, ctx, carry, jnp.int32(i), steps=steps, optimize_noise=optimize_noise
        )
        history.append(values)
    out = _finish_program(G, static_loss, ctx, carry, optimize_noise=optimize_noise)
    return dict(out, history=jnp.stack(history))


def project(
    G: Generator,
    variables,
    targets_uint8,
    *,
    steps: int = 1000,
    lr: float = 0.1,
    space: str = 'w',
    optimize_noise: bool = True,
    noise_weight: float = 1e5,
    initial_noise_factor: Optional[float] = None,
    noise_ramp_length: float = 0.75,
    lr_rampup: float = 0.05,
    lr_rampdown: float = 0.25,
    perceptual=None,
    seed: Union[int, Sequence[int]] = 0,
    w_avg_samples: int = 10000,
    loop: str = 'auto',
    init_ws=None,
) -> ProjectionResult:
    """Project uint8 targets (B, H, W, 3) (resized to the generator's output size when they differ).

    space 'w' optimises one w per image (broadcast to every layer), 'w+' one per layer. Without
    `optimize_noise` the generator's const noise is used. `perceptual`: a loss with features/distance
    or ``__call__(a, b) -> (B,)`` on [-1, 1] NHWC images; a pytree (as the built-in ones are) or hashable;
    default PixelPyramidLoss(). `seed`: image i uses seed + i (or seed[i]), so an image projects the same
    alone or in any batch given the same per-image seed. `loop`: 'scan' runs the whole optimisation as
    one compiled program; 'host' compiles the step alone and dispatches it `steps` times (faster on
    XLA:CPU, see `_stepped`); 'auto' (default) picks 'host' on CPU, 'scan' on accelerators. Both
    give the same result. `init_ws` (B, num_ws, w_dim): start there instead of at w_avg (hybrid
    inversion: an encoder's guess, `gsd.nn.encoder`). `initial_noise_factor` None means 0.05 (the
    reference's) from w_avg and HYBRID_NOISE_FACTOR from `init_ws`: latent noise of the reference's
    scale would throw a good start away.
    """
    if space not in SPACES:
        raise ValueError(f'space must be one of {SPACES}, got {space!r}')
    targets = np.asarray(targets_uint8)
    if targets.dtype != np.uint8 or targets.ndim != 4 or targets.shape[-1] != 3:
        raise ValueError(f'targets must be uint8 (B, H, W, 3), got {targets.dtype} {targets.shape}')
    if steps < 1:
        raise ValueError(f'steps must be >= 1, got {steps}')
    batch = targets.shape[0]
    seeds = seed + np.arange(batch) if np.ndim(seed) == 0 else np.asarray(seed)
    if seeds.shape != (batch,):
        raise ValueError(f'seed must be an int or one per image ({batch}), got {seed!r}')
    if init_ws is not None:
        init_ws = np.asarray(init_ws, np.float32)
        if init_ws.shape != (batch, G.num_ws, G.w_dim):
            raise ValueError(f'init_ws must be (B, num_ws, w_dim) = {(batch, G.num_ws, G.w_dim)}, got {init_ws.shape}')
    if initial_noise_factor is None:
        initial_noise_factor = INITIAL_NOISE_FACTOR if init_ws is None else HYBRID_NOISE_FACTOR
    loss = PixelPyramidLoss() if perceptual is None else perceptual
    # Array-only pytrees travel as traced arguments (LPIPS's weights); anything else is a static argument.
    is_pytree = all(isinstance(x, (jax.Array, np.ndarray)) for x in jax.tree_util.tree_leaves(loss))
    # Traced scalars, not static arguments: changing them reuses the compiled program.
    hp = dict(
        lr=lr,
        noise_weight=noise_weight,
        initial_noise_factor=initial_noise_factor,
        noise_ramp_length=noise_ramp_length,
        lr_rampup=lr_rampup,
        lr_rampdown=lr_rampdown,
        tied=space == 'w',
    )
    hp = {k: np.float32(v) for k, v in hp.items()}
    if loop not in LOOPS:
        raise ValueError(f'loop must be one of {LOOPS}, got {loop!r}')
    if loop == 'auto':
        loop = 'host' if jax.default_backend() == 'cpu' else 'scan'
    run = _program if loop == 'scan' else _stepped
    out = run(
        G.clone(fused_modconv=False),  # one dense conv for the batch: fast gradients w.r.t. w
        variables,
        targets,
        loss if is_pytree else None,
        None if is_pytree else loss,
        hp,
        seeds.astype(np.uint32),
        init_ws,
        steps=int(steps),
        optimize_noise=bool(optimize_noise),
        w_avg_samples=int(w_avg_samples),
    )
    out = jax.device_get(out)
    images = to_uint8(out['images'])
    target = np.clip(np.round((out['target'] + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return ProjectionResult(
        ws=out['ws'],
        noise=dict(out['noise']),
        images=images,
        psnr=psnr(images, target),
        loss=out['loss'],
        loss_history=out['history'],
    )
