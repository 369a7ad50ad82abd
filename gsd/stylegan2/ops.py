"""StyleGAN2's resampling convolutions, rewritten as dense convs and slices that XLA runs fast.

StyleGAN2 resamples with the FIR filter [1, 3, 3, 1] (outer product, normalised). Written the
reference way (a transposed conv followed by a 4x4 depthwise blur; a blur followed by a strided
conv), XLA on CPU runs 10-100x below its dense-conv rate, and the gradients are worse still.
Every function here computes exactly the same linear map as the reference, but as

* the upsampling conv: four small dense convs at the LOW resolution, one per output phase of the
  transposed conv (exactly its 9 taps), blurred phase-wise and interleaved once;
* the downsampling conv: the blur as shifted sums, then the strided conv as four small VALID convs,
  one per input parity phase (exactly its 9 taps);
* the separable FIR up/downsamplers: sums of shifted slices.

All arrays are NHWC; conv weights are HWIO. tests/test_ops.py checks each against the literal
formulation (tests/reference_ops.py): values, gradients, and the second derivatives of R1 and
path-length regularisation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def conv2d(x, w, *, stride: int = 1, padding='SAME', precision=None):
    """Plain cross-correlation, NHWC x HWIO (what torch.conv2d and tf.nn.conv2d compute)."""
    return jax.lax.conv_general_dilated(
        x, w.astype(x.dtype), (stride, stride), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision
    )


def upconv2x(x, w, *, precision=None):
    """Transposed 3x3 conv with stride 2 (torch conv_transpose2d convention), then the FIR blur
    with gain 4 and padding (1, 1): (N, H, W, I) -> (N, 2H, 2W, O).

    The transposed conv's output T splits into 2x2 phases by output parity. Along one axis the
    even samples T[2q] = w[2] x[q-1] + w[0] x[q] (q = 0..H) and the odd ones T[2q+1] = w[1] x[q],
    so the four phases are four small dense convs at the input resolution doing exactly the useful
    multiply-adds. Each conv is padded by one on both sides, so odd phases carry a zero border that
    makes every blur tap a plain slice: the blur, interleave and any elementwise consumer then fuse
    into one pass over the output.
    """
    kh, kw, cin, cout = w.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f'upconv2x expects a 3x3 kernel, got {w.shape}')
    even = w[::-2]  # taps for inputs (q-1, q) along an axis of even parity
    odd = w[1:2]
    conv = functools.partial(small_conv, pad=1, precision=precision)
    t_ee = conv(x, even[:, ::-2])  # (H+1, W+1)
    t_eo = conv(x, even[:, 1:2])  # (H+1, W+2): odd along x, zero first and last column
    t_oe = conv(x, odd[:, ::-2])  # (H+2, W+1)
    t_oo = conv(x, odd[:, 1:2])  # (H+2, W+2)
    n, h, wd, _ = x.shape
    ee, eo = _blur_phases(t_ee, t_eo, 2, wd)  # blur along x
    oe, oo = _blur_phases(t_oe, t_oo, 2, wd)
    y00, y10 = _blur_phases(ee, oe, 1, h)  # then along y
    y01, y11 = _blur_phases(eo, oo, 1, h)
    y = jnp.stack([jnp.stack([y00, y01], axis=3), jnp.stack([y10, y11], axis=3)], axis=2)
    return y.reshape(n, 2 * h, 2 * wd, cout)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def small_conv(x, w, pad: int = 0, precision=None):
    """Correlation with `pad` zeros on every side, for the 1- and 2-tap kernels of the phase convs.

    XLA on CPU computes the weight gradient of a conv whose padding reaches past its kernel 10-20x
    slower than that of a VALID conv on an explicitly padded input, and second derivatives (R1,
    path length) hit the same path through the input gradient. Both gradients here are VALID
    convs on explicitly padded (or cropped) arrays.
    """
    return conv2d(x, w, padding=((pad, pad), (pad, pad)), precision=precision)


def _small_conv_fwd(x, w, pad, precision):
    return small_conv(x, w, pad, precision), (x, w)


def _pad_or_crop(x, amount: int):
    if amount >= 0:
        return jnp.pad(x, ((0, 0), (amount, amount), (amount, amount), (0, 0)))
    return x[:, -amount : x.shape[1] + amount, -amount : x.shape[2] + amount]


def _small_conv_bwd(pad, precision, residuals, dy):
    x, w = residuals
    kh, kw = w.shape[:2]
    if kh != kw:  # 2x1 / 1x2 kernels: pad each axis by its own amount
        dyp = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        dyp = dyp[:, pad : dyp.shape[1] - pad, pad : dyp.shape[2] - pad]
    else:
        dyp = _pad_or_crop(dy, kh - 1 - pad)
    dx = conv2d(dyp, jnp.swapaxes(w[::-1, ::-1], 2, 3), padding='VALID', precision=precision)
    xp = _pad_or_crop(x, pad)
    _, vjp_w = jax.vjp(lambda w: conv2d(xp, w, padding='VALID', precision=precision), w)
    return dx, vjp_w(dy)[0]


small_conv.defvjp(_small_conv_fwd, _small_conv_bwd)


def _blur_phases(even, odd, axis: int, n: int):
    """FIR blur (gain 2, padding (1, 1)) along `axis` of a signal T given as its even samples
    E[0..n] and its odd samples with a zero border, O'[q+1] = T[2q+1] (n+2 entries): returns the
    even and odd samples (n each) of the result."""
    sl = functools.partial(jax.lax.slice_in_dim, axis=axis)
    e0, e1 = sl(even, 0, n), sl(even, 1, n + 1)  # T[2q], T[2q+2]
    o_prev, o_cur, o_next = sl(odd, 0, n), sl(odd, 1, n + 1), sl(odd, 2, n + 2)  # T[2q-1], T[2q+1], T[2q+3]
    y_even = (o_prev + 3.0 * e0 + 3.0 * o_cur + e1) * 0.25
    y_odd = (e0 + 3.0 * o_cur + 3.0 * e1 + o_next) * 0.25
    return y_even, y_odd


def downconv2x(x, w, *, precision=None):
    """FIR blur with padding (2, 2), then a 3x3 conv with stride 2: (N, H, W, I) -> (N, H/2, W/2, O).

    The blur runs as shifted sums. Split the blurred z into its 2x2 parity phases; along an axis
    y[q] = w[0] z[2q] + w[1] z[2q+1] + w[2] z[2q+2], so the strided conv is four small VALID convs,
    one per phase (exactly the strided conv's 9 taps), summed.
    """
    kh, kw, cin, cout = w.shape
    if (kh, kw) != (3, 3):
        raise ValueError(f'downconv2x expects a 3x3 kernel, got {w.shape}')
    z = _blur_axis(_blur_axis(x, 1), 2)  # (H+1, W+1)
    conv = functools.partial(small_conv, pad=0, precision=precision)
    even, odd = w[::2], w[1:2]  # taps on z[2q], z[2q+2] and on z[2q+1]
    y = conv(z[:, ::2, ::2], even[:, ::2])  # (H/2+1, W/2+1) phase, 2x2 taps
    y = y + conv(z[:, ::2, 1::2], even[:, 1:2])  # (H/2+1, W/2)
    y = y + conv(z[:, 1::2, ::2], odd[:, ::2])  # (H/2, W/2+1)
    return y + conv(z[:, 1::2, 1::2], odd[:, 1:2])  # (H/2, W/2)


def _blur_axis(x, axis: int):
    """FIR blur with padding (2, 2) along `axis`: length n -> n + 1."""
    n = x.shape[axis] + 1
    pad = [(0, 0)] * x.ndim
    pad[axis] = (2, 2)
    xp = jnp.pad(x, pad)
    sl = functools.partial(jax.lax.slice_in_dim, axis=axis)
    return (sl(xp, 0, n) + 3.0 * sl(xp, 1, n + 1) + 3.0 * sl(xp, 2, n + 2) + sl(xp, 3, n + 3)) * 0.125


def _shift(x, axis: int, offset: int):
    """y[i] = x[i + offset] along `axis`, zero outside."""
    pad = [(0, 0)] * x.ndim
    size = x.shape[axis]
    if offset > 0:
        pad[axis] = (0, offset)
        return jax.lax.slice_in_dim(jnp.pad(x, pad), offset, offset + size, axis=axis)
    pad[axis] = (-offset, 0)
    return jax.lax.slice_in_dim(jnp.pad(x, pad), 0, size, axis=axis)


def _upsample_axis(x, axis: int):
    # Zero-insertion upsampling, padding (2, 1), FIR with gain 2: even outputs see x[q-1], x[q]
    # with weights 1/4, 3/4; odd outputs see x[q], x[q+1] with 3/4, 1/4.
    even = 0.25 * _shift(x, axis, -1) + 0.75 * x
    odd = 0.75 * x + 0.25 * _shift(x, axis, 1)
    y = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] *= 2
    return y.reshape(shape)


def upsample2x(x):
    """upfirdn2d(x, FIR, up=2, padding=(2, 1), gain=4): the skip upsampler of StyleGAN2's RGB path."""
    return _upsample_axis(_upsample_axis(x, 1), 2)


def _downsample_axis(x, axis: int):
    # Blur with padding (1, 1) and keep every second sample: y[q] = (x[2q-1] + 3x[2q] + 3x[2q+1] + x[2q+2]) / 8.
    shape = list(x.shape)
    shape[axis : axis + 1] = [shape[axis] // 2, 2]
    pairs = x.reshape(shape)
    even = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
    odd = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
    return (_shift(odd, axis, -1) + 3.0 * even + 3.0 * odd + _shift(even, axis, 1)) * 0.125


def downsample2x(x):
    """upfirdn2d(x, FIR, down=2, padding=(1, 1)): the discriminator's skip-path downsampler."""
    return _downsample_axis(_downsample_axis(x, 1), 2)
