"""StyleGAN2 generator and discriminator in Flax Linen (NHWC), numerically equal to the public releases.

Parameters are stored raw, as every release stores them, and scaled at run time (equalized
learning rate). Variables live in two collections:

* ``params``: trainable weights; ``mapping/fc{i}/{weight [in, out], bias}``,
  ``synthesis/b{R}/{conv0, conv1}/{weight [3, 3, I, O], bias, noise_strength, affine/{weight, bias}}``,
  ``synthesis/b{R}/torgb/{weight [I, 3], bias, affine/*}``, ``synthesis/b4/const [4, 4, C]``.
* ``buffers``: ``mapping/w_avg [w_dim]`` and each conv's ``noise_const [R, R]``.

Every synthesis layer is a module named ``synthesis/b{R}/{conv0,conv1,torgb}``; run with
``capture_intermediates`` (see :func:`capture_activations`) to read its output under the
readable name ``b{R}.conv0`` etc. A block's own output is ``(features, running_rgb)``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gsd.stylegan2 import ops

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ('const', 'random', 'none')


def lrelu_gain(x):
    """Leaky ReLU(0.2) times sqrt(2): StyleGAN2's activation with its variance-preserving gain."""
    return jnp.where(x >= 0, x, 0.2 * x) * SQRT2


def num_ws(resolution: int) -> int:
    return 2 * int(math.log2(resolution)) - 2


def block_resolutions(resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(resolution)) + 1)]


def channels_rosinality(resolution: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """rosinality's rule: 512 up to 32 px, then 256*cm, 128*cm, ... (one entry per block 4..res)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
    return tuple(table[r] * (channel_multiplier if r >= 64 else 1) for r in block_resolutions(resolution))


def channels_nvidia(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> tuple[int, ...]:
    """NVIDIA's rule: min(channel_base // R, channel_max) (config-f: 32768, 512)."""
    return tuple(min(channel_base // r, channel_max) for r in block_resolutions(resolution))


def _check_resolution(resolution: int):
    if resolution < 4 or resolution > 4096 or resolution & (resolution - 1):
        raise ValueError(f'resolution must be a power of two in 4..4096, got {resolution}')


class EqualDense(nn.Module):
    """Dense layer with equalized learning rate: y = x @ (W * lr_mul / sqrt(in)) + b * lr_mul."""

    features: int
    lr_mul: float = 1.0
    bias_init: float = 0.0
    activation: bool = False
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        fan_in = x.shape[-1]
        w = self.param('weight', lambda k, s: jax.random.normal(k, s) / self.lr_mul, (fan_in, self.features))
        b = self.param('bias', lambda k, s: jnp.full(s, self.bias_init / self.lr_mul, jnp.float32), (self.features,))
        y = jnp.dot(x, w.astype(x.dtype) * (self.lr_mul / math.sqrt(fan_in)), precision=self.precision)
        y = y + (b * self.lr_mul).astype(x.dtype)
        return lrelu_gain(y) if self.activation else y


class MappingNetwork(nn.Module):
    """z -> w: 2nd-moment normalisation then n_mlp equalized dense layers (lr_mul 0.01)."""

    z_dim: int
    w_dim: int
    n_mlp: int
    lr_mul: float = 0.01
    precision: Any = None

    @nn.compact
    def __call__(self, z):
        x = z.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + 1e-8)
        for i in range(self.n_mlp):
            x = EqualDense(self.w_dim, lr_mul=self.lr_mul, activation=True, precision=self.precision, name=f'fc{i}')(x)
        # The running mean of w (truncation target); training updates it, inference reads it.
        self.variable('buffers', 'w_avg', jnp.zeros, (self.w_dim,))
        return x

    def w_avg(self):
        return self.get_variable('buffers', 'w_avg')


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling 2x), noise, bias, leaky ReLU * sqrt(2)."""

    out_channels: int
    resolution: int  # output resolution (noise map size)
    up: bool = False
    fused_modconv: Optional[bool] = None
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, w, noise_mode: str = 'const', noise=None):
        cin = x.shape[-1]
        styles = EqualDense(cin, bias_init=1.0, precision=self.precision, name='affine')(w)  # (N, I)
        weight = self.param('weight', nn.initializers.normal(1.0), (3, 3, cin, self.out_channels))
        strength = self.param('noise_strength', nn.initializers.zeros, ())
        bias = self.param('bias', nn.initializers.zeros, (self.out_channels,))
        noise_const = self.variable(
            'buffers',
            'noise_const',
            jax.random.normal,
            self.make_rng('params') if self.is_initializing() else None,
            (self.resolution, self.resolution),
        )
        wscaled = weight * (1.0 / math.sqrt(cin * 9))
        # Demodulation coefficient per (sample, out channel): rsqrt(sum_i s_i^2 sum_k w_{k,i,o}^2).
        dcoefs = jax.lax.rsqrt(
            jnp.dot(jnp.square(styles), jnp.sum(jnp.square(wscaled), axis=(0, 1)), precision=self.precision) + 1e-8
        )
        conv = functools.partial(ops.upconv2x if self.up else ops.conv2d, precision=self.precision)
        fused = x.shape[0] == 1 if self.fused_modconv is None else self.fused_modconv
        if fused:
            # Per-sample kernels with style and demodulation folded in (NVIDIA's fused modconv):
            # cheapest for one sample, but its gradient w.r.t. w goes through the conv's weight
            # gradient, which XLA computes slowly.
            wk = wscaled[None] * styles[:, None, None, :, None] * dcoefs[:, None, None, None, :]
            wk = wk.astype(self.dtype)
            if x.shape[0] == 1:  # vmap would turn even one sample into a slower grouped conv
                y = conv(x.astype(self.dtype), wk[0])
            else:
                y = jax.vmap(lambda xi, wi: conv(xi[None], wi)[0])(x.astype(self.dtype), wk)
            y = y.astype(jnp.float32)
        else:
            # Modulating the activations keeps one kernel shared by the batch (a dense conv rather
            # than a grouped conv per sample): the same linear map.
            xm = (x * styles[:, None, None, :].astype(x.dtype)).astype(self.dtype)
            y = conv(xm, wscaled.astype(self.dtype), precision=self.precision)
            y = y.astype(jnp.float32) * dcoefs[:, None, None, :]
        y = y + strength * _noise(self, noise_mode, noise, noise_const.value, y.shape[0])[..., None]
        return lrelu_gain(y + bias)


def _noise(module: nn.Module, mode: str, explicit, const, batch: int):
    """(N or 1, R, R) noise for one layer: explicit arrays win, else by mode."""
    if explicit is not None:
        explicit = jnp.asarray(explicit, jnp.float32)
        return explicit if explicit.ndim == 3 else explicit[None]
    if mode == 'const':
        return const[None]
    if mode == 'random':
        return jax.random.normal(module.make_rng('noise'), (batch,) + const.shape)
    if mode == 'none':
        return jnp.zeros((1,) + const.shape)
    raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got {mode!r}')


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation, plus bias, linear."""

    img_channels: int = 3
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, w):
        cin = x.shape[-1]
        styles = EqualDense(cin, bias_init=1.0, precision=self.precision, name='affine')(w)
        weight = self.param('weight', nn.initializers.normal(1.0), (cin, self.img_channels))
        bias = self.param('bias', nn.initializers.zeros, (self.img_channels,))
        # Per-sample modulated 1x1 kernels are tiny: a batched matmul, no pass over the activations.
        wk = weight[None] * (styles * (1.0 / math.sqrt(cin)))[:, :, None]
        y = jnp.einsum('nhwi,nio->nhwo', x.astype(self.dtype), wk.astype(self.dtype), precision=self.precision)
        return y.astype(jnp.float32) + bias


class SynthesisBlock(nn.Module):
    """One resolution: (const |) conv0 (up) -> conv1 -> torgb, adding to the upsampled running RGB."""

    resolution: int
    out_channels: int
    img_channels: int = 3
    fused_modconv: Optional[bool] = None
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x, img, ws, noise_mode='const', noise=None):
        # ws: (N, 3, w_dim) = the w rows of conv0, conv1 and torgb (torgb shares its row with the
        # next block's conv0); the 4x4 block reads rows (conv1, torgb) as ws[:, 1:3].
        noise = noise or {}
        kw = dict(dtype=self.dtype, precision=self.precision)
        name = f'b{self.resolution}'
        if self.resolution == 4:
            const = self.param('const', nn.initializers.normal(1.0), (4, 4, self.out_channels))
            x = jnp.broadcast_to(const, (ws.shape[0],) + const.shape).astype(jnp.float32)
        else:
            x = SynthesisLayer(
                self.out_channels, self.resolution, up=True, fused_modconv=self.fused_modconv, name='conv0', **kw
            )(x, ws[:, 0], noise_mode, noise.get(f'{name}.conv0'))
        x = SynthesisLayer(self.out_channels, self.resolution, fused_modconv=self.fused_modconv, name='conv1', **kw)(
            x, ws[:, 1], noise_mode, noise.get(f'{name}.conv1')
        )
        y = ToRGB(self.img_channels, name='torgb', **kw)(x, ws[:, 2])
        img = y if img is None else ops.upsample2x(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """w+ (N, num_ws, w_dim) -> image (N, res, res, 3), raw (about [-1, 1])."""

    resolution: int
    channels: Sequence[int]  # one per block resolution 4..resolution
    img_channels: int = 3
    fused_modconv: Optional[bool] = None
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, ws, noise_mode: str = 'const', noise: Optional[Mapping[str, Any]] = None):
        x = img = None
        for i, (res, ch) in enumerate(zip(block_resolutions(self.resolution), self.channels)):
            # Block i reads w rows 2i-1, 2i, 2i+1 (conv0, conv1, torgb); the 4x4 block has no conv0.
            rows = ws[:, max(2 * i - 1, 0) : 2 * i + 2]
            if i == 0:
                rows = jnp.concatenate([rows[:, :1], rows], axis=1)
            x, img = SynthesisBlock(
                res, ch, self.img_channels, self.fused_modconv, self.dtype, self.precision, name=f'b{res}'
            )(x, img, rows, noise_mode, noise)
        return img


class Generator(nn.Module):
    """StyleGAN2 generator (config-e/f 'skip' architecture).

    ``apply(v, z, truncation_psi=0.7, noise_mode='const')`` -> images (N, H, W, 3) float32, raw;
    ``apply(v, z, truncation_psi=..., method='map')`` -> ws (N, num_ws, w_dim);
    ``apply(v, ws, noise_mode='const', method='synthesize')`` -> images.
    ``noise_mode='random'`` needs ``rngs={'noise': key}``.
    """

    resolution: int
    channels: Sequence[int]
    z_dim: int = 512
    w_dim: int = 512
    n_mlp: int = 8
    mapping_lr_mul: float = 0.01
    img_channels: int = 3
    crop_rows: Optional[tuple[int, int]] = None  # e.g. (64, 448): the car models' 512x384 picture
    # Run-time choices, not architecture. fused_modconv: fold styles into per-sample kernels (True),
    # modulate activations with one shared kernel (False; fastest for batches and for gradients
    # w.r.t. w, e.g. projection), or True only for batch 1 (None).
    fused_modconv: Optional[bool] = None
    dtype: Any = jnp.float32
    precision: Any = None

    def setup(self):
        _check_resolution(self.resolution)
        if len(self.channels) != len(block_resolutions(self.resolution)):
            raise ValueError(f'channels needs one entry per resolution 4..{self.resolution}, got {self.channels}')
        self.mapping = MappingNetwork(self.z_dim, self.w_dim, self.n_mlp, self.mapping_lr_mul, self.precision)
        self.synthesis = SynthesisNetwork(
            self.resolution, tuple(self.channels), self.img_channels, self.fused_modconv, self.dtype, self.precision
        )

    @property
    def num_ws(self) -> int:
        return num_ws(self.resolution)

    def map(self, z, truncation_psi=1.0, truncation_cutoff=None, mix_z=None, mix_index=None):
        """z (N, z_dim) -> ws (N, num_ws, w_dim); optional style mixing: rows >= mix_index from mix_z."""
        ws = self._broadcast(self.mapping(z))
        if mix_z is not None:
            ws2 = self._broadcast(self.mapping(mix_z))
            rows = jnp.arange(self.num_ws)[None, :, None]
            ws = jnp.where(rows < mix_index, ws, ws2)
        return self.truncate(ws, truncation_psi, truncation_cutoff)

    def _broadcast(self, w):
        return jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, w.shape[-1]))

    def truncate(self, ws, truncation_psi=1.0, truncation_cutoff=None):
        """w_avg + psi (w - w_avg) on the first `truncation_cutoff` rows (all when None)."""
        if isinstance(truncation_psi, (int, float)) and truncation_psi == 1:
            return ws
        w_avg = self.mapping.w_avg()
        truncated = w_avg + truncation_psi * (ws - w_avg)
        if truncation_cutoff is None:
            return truncated
        rows = jnp.arange(ws.shape[1])[None, :, None]
        return jnp.where(rows < truncation_cutoff, truncated, ws)

    def synthesize(self, ws, noise_mode: str = 'const', noise=None):
        """w (N, w_dim) or w+ (N, num_ws, w_dim) -> images. `noise`: {'b8.conv0': (N|1, 8, 8) | (8, 8), ...}."""
        if ws.ndim == 2:
            ws = self._broadcast(ws)
        if ws.shape[1] != self.num_ws:
            raise ValueError(f'ws must have {self.num_ws} rows for {self.resolution} px, got shape {ws.shape}')
        img = self.synthesis(ws, noise_mode, noise)
        if self.crop_rows is not None:
            img = img[:, self.crop_rows[0] : self.crop_rows[1]]
        return img

    def __call__(
        self, z, truncation_psi=1.0, truncation_cutoff=None, noise_mode='const', noise=None, mix_z=None, mix_index=None
    ):
        ws = self.map(z, truncation_psi, truncation_cutoff, mix_z, mix_index)
        return self.synthesize(ws, noise_mode, noise)


def noise_layer_names(resolution: int) -> list[str]:
    """Layers that take noise, in the releases' order (rosinality's noise_0, noise_1, ...)."""
    names = []
    for r in block_resolutions(resolution):
        names += [f'b{r}.conv1'] if r == 4 else [f'b{r}.conv0', f'b{r}.conv1']
    return names


# ---------------------------------------------------------------------------------------------
# Discriminator


class EqualConv(nn.Module):
    """Equalized-lr conv, optionally downsampling 2x (FIR blur first) and with bias + lrelu."""

    features: int
    kernel: int = 3
    down: bool = False
    use_bias: bool = True
    activation: bool = True
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        w = self.param('weight', nn.initializers.normal(1.0), (self.kernel, self.kernel, cin, self.features))
        w = (w * (1.0 / math.sqrt(cin * self.kernel * self.kernel))).astype(self.dtype)
        x = x.astype(self.dtype)
        if self.kernel == 1:
            y = jnp.einsum('nhwi,io->nhwo', ops.downsample2x(x) if self.down else x, w[0, 0], precision=self.precision)
        elif self.down:
            y = ops.downconv2x(x, w, precision=self.precision)
        else:
            y = ops.conv2d(x, w, precision=self.precision)
        y = y.astype(jnp.float32)
        if self.use_bias:
            y = y + self.param('bias', nn.initializers.zeros, (self.features,))
        return lrelu_gain(y) if self.activation else y


def minibatch_stddev(x, group_size: int = 4, num_channels: int = 1):
    """Append the std over groups of samples (sample n is in group n % (N / G)), averaged per group."""
    n, h, w, c = x.shape
    g = min(group_size, n)
    if n % g:
        raise ValueError(f'batch {n} is not divisible by the minibatch-stddev group size {g}')
    y = x.reshape(g, n // g, h, w, num_channels, c // num_channels)
    y = jnp.sqrt(jnp.var(y, axis=0) + 1e-8)  # (n/G, H, W, F, c)
    y = jnp.mean(y, axis=(1, 2, 4))  # (n/G, F)
    y = jnp.tile(y, (g, 1))[:, None, None, :]
    return jnp.concatenate([x, jnp.broadcast_to(y, (n, h, w, num_channels))], axis=-1)


class DiscriminatorBlock(nn.Module):
    """Residual block: conv0 3x3, conv1 3x3 down, plus a 1x1 downsampling skip, summed / sqrt(2)."""

    tmp_channels: int
    out_channels: int
    from_rgb: bool
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, precision=self.precision)
        if self.from_rgb:
            x = EqualConv(self.tmp_channels, kernel=1, name='fromrgb', **kw)(x)
        skip = EqualConv(self.out_channels, kernel=1, down=True, use_bias=False, activation=False, name='skip', **kw)(x)
        x = EqualConv(self.tmp_channels, name='conv0', **kw)(x)
        x = EqualConv(self.out_channels, down=True, name='conv1', **kw)(x)
        return (x + skip) * (1.0 / SQRT2)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images (N, H, W, 3) -> logits (N, 1)."""

    resolution: int
    channels: Sequence[int]  # one per resolution 4..resolution, as for the generator
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, img):
        _check_resolution(self.resolution)
        ch = dict(zip(block_resolutions(self.resolution), self.channels))
        kw = dict(dtype=self.dtype, precision=self.precision)
        x = img.astype(jnp.float32)
        for r in reversed(block_resolutions(self.resolution)[1:]):
            x = DiscriminatorBlock(ch[r], ch[r // 2], from_rgb=(r == self.resolution), name=f'b{r}', **kw)(x)
        return DiscriminatorEpilogue(
            ch[4], self.mbstd_group_size, self.mbstd_num_channels, from_rgb=(self.resolution == 4), name='b4', **kw
        )(x)


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch stddev, conv, dense, dense to one logit."""

    channels: int
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1
    from_rgb: bool = False
    dtype: Any = jnp.float32
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        if self.from_rgb:
            x = EqualConv(self.channels, kernel=1, name='fromrgb', dtype=self.dtype, precision=self.precision)(x)
        if self.mbstd_group_size:
            x = minibatch_stddev(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = EqualConv(self.channels, name='conv', dtype=self.dtype, precision=self.precision)(x)
        # The releases flatten NCHW; keeping their order lets their fc weights load unchanged.
        x = x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)
        x = EqualDense(self.channels, activation=True, precision=self.precision, name='fc')(x)
        return EqualDense(1, precision=self.precision, name='out')(x)


# ---------------------------------------------------------------------------------------------
# Reading activations

LAYER_KINDS = ('conv0', 'conv1', 'torgb')


def layer_names(resolution: int) -> list[str]:
    """Every synthesis layer's readable name, in forward order: 'b4.conv1', 'b4.torgb', 'b8.conv0', ..."""
    names = []
    for r in block_resolutions(resolution):
        names += [f'b{r}.{k}' for k in LAYER_KINDS if not (r == 4 and k == 'conv0')]
    return names


def _is_synthesis_capture(mdl: nn.Module, method_name: str) -> bool:
    path = mdl.path
    return (
        method_name == '__call__'
        and len(path) in (2, 3)
        and path[0] == 'synthesis'
        and (len(path) == 2 or path[2] in LAYER_KINDS)
    )


def capture_activations(module: Generator, variables, ws, noise_mode: str = 'const', noise=None, rngs=None):
    """Run synthesis on ws and return (images, {name: activation}), names as in `layer_names`, plus
    'b{R}.rgb' for each block's running RGB image. Built on Flax's `capture_intermediates`."""
    images, state = module.apply(
        variables,
        ws,
        noise_mode,
        noise,
        method='synthesize',
        rngs=rngs,
        capture_intermediates=_is_synthesis_capture,
        mutable=['intermediates'],
    )
    acts = {}
    for block, sub in state['intermediates']['synthesis'].items():
        for key, value in sub.items():
            if key == '__call__':
                acts[f'{block}.rgb'] = value[0][1]
            else:
                acts[f'{block}.{key}'] = value['__call__'][0]
    return images, acts
