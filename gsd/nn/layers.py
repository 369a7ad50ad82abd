"""Layers the heads and the UNet share: PyTorch-default initialisers and a 3x3 conv with three implementations.

`Conv3x3` runs as im2col (one matmul over the nine shifted copies), XLA's own conv, or nine tap matmuls
(`leaky_conv3x3_taps`) whose hand-written backward pass keeps only the layer input: on CPU that avoids
im2col's 9x-wide residual (1.2 GB for a head's first conv at 512 px). Each conv applies the previous
layer's leaky ReLU to its input, so a stack keeps one map per layer for the backward pass.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default init for Conv2d/Linear: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


CONV_IMPLS = ('im2col', 'xla', 'taps')


def _leaky(x, slope):
    return x if slope is None else nn.leaky_relu(x, slope)


def _tap_slice(xp, t, d: int, h: int, w: int):
    """The input of tap t = 3i + j: the padded map shifted by (i * d, j * d), cropped to (h, w)."""
    zero = jnp.zeros((), jnp.int32)
    return jax.lax.dynamic_slice(xp, (zero, (t // 3) * d, (t % 3) * d, zero), xp.shape[:1] + (h, w) + xp.shape[3:])


def _taps(x, kernel, d: int, precision):
    """Zero-padded dilated 3x3 conv as nine shifted (H*W, I) @ (I, O) matmuls.

    A loop, not nine unrolled matmuls: XLA:CPU would schedule the nine shifted copies and products
    side by side (nine full-size maps alive); a loop runs one tap at a time. Matmuls, unlike
    convolutions, run at full speed inside XLA:CPU loops."""
    h, w = x.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
    taps = kernel.reshape((9,) + kernel.shape[2:])
    out = jnp.einsum('nhwc,co->nhwo', _tap_slice(xp, 0, d, h, w), taps[0], precision=precision)
    body = lambda t, y: y + jnp.einsum('nhwc,co->nhwo', _tap_slice(xp, t, d, h, w), taps[t], precision=precision)
    return jax.lax.fori_loop(1, 9, body, out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def leaky_conv3x3_taps(x, kernel, dilation: int, negative_slope: Optional[float], precision=None):
    """conv3x3(leaky_relu(x)) (no bias), zero padding = dilation, by `_taps`; slope None: no activation.

    Its only residual is x, the block's input: the backward recomputes the activation and the shifted
    copies one tap at a time, and runs the input gradient as the same conv with the kernel flipped
    (the transpose of a stride-1 conv padded by its dilation on both sides)."""
    return _taps(_leaky(x, negative_slope), kernel, dilation, precision)


def _leaky_conv3x3_taps_fwd(x, kernel, dilation, negative_slope, precision):
    return leaky_conv3x3_taps(x, kernel, dilation, negative_slope, precision), (x, kernel)


def _leaky_conv3x3_taps_bwd(d, negative_slope, precision, res, g):
    x, kernel = res
    h, w = x.shape[1:3]
    ap = jnp.pad(_leaky(x, negative_slope), ((0, 0), (d, d), (d, d), (0, 0)))

    def tap_grad(t, dk):
        return dk.at[t].set(jnp.einsum('nhwc,nhwo->co', _tap_slice(ap, t, d, h, w), g, precision=precision))

    dk = jax.lax.fori_loop(0, 9, tap_grad, jnp.zeros((9,) + kernel.shape[2:], g.dtype))
    dx = _taps(g, jnp.swapaxes(kernel[::-1, ::-1], 2, 3), d, precision)
    if negative_slope is not None:
        dx = dx * jnp.where(x >= 0, 1.0, negative_slope).astype(dx.dtype)  # leaky_relu's derivative (1 at 0)
    return dx.astype(x.dtype), dk.reshape(kernel.shape).astype(kernel.dtype)


leaky_conv3x3_taps.defvjp(_leaky_conv3x3_taps_fwd, _leaky_conv3x3_taps_bwd)


class Conv3x3(nn.Module):
    """3x3 conv, stride 1, zero padding = dilation (PyTorch's; output size = input size). Params
    kernel (3, 3, I, O) and bias (O,), as nn.Conv stores them. With `input_negative_slope`, a leaky
    ReLU is applied to the input first (a CNN layer's activation moved into the next conv, so that a
    layer's only residual for the backward pass is its input).

    impl 'xla' is lax.conv_general_dilated; 'im2col' gathers the 9 dilated taps into channels and
    runs one matmul: the same sums, and the fast form on XLA:CPU, which runs convolutions inside
    loops (the training scans) ~20x slower than outside them; 'taps' (`leaky_conv3x3_taps`) runs the
    nine taps as nine matmuls, in turn, with a hand-written backward pass: the same sums again, and
    at most a map and one shifted copy alive besides the output, where im2col's backward keeps a
    9x-wide copy of the input (1.2 GB for 128 channels at 512 px). None: 'im2col' on CPU, else 'xla'.
    """

    features: int
    dilation: int = 1
    impl: Optional[str] = None
    precision: Any = None
    input_negative_slope: Optional[float] = None

    @nn.compact
    def __call__(self, x):
        cin, d = x.shape[-1], self.dilation
        kernel = self.param('kernel', torch_kernel_init, (3, 3, cin, self.features)).astype(x.dtype)
        bias = self.param('bias', torch_bias_init(9 * cin), (self.features,))
        impl = self.impl or ('im2col' if jax.default_backend() == 'cpu' else 'xla')
        if impl == 'taps':
            return leaky_conv3x3_taps(x, kernel, d, self.input_negative_slope, self.precision) + bias
        x = _leaky(x, self.input_negative_slope)
        if impl == 'xla':
            y = jax.lax.conv_general_dilated(
                x,
                kernel,
                (1, 1),
                ((d, d), (d, d)),
                rhs_dilation=(d, d),
                dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                precision=self.precision,
            )
        elif impl == 'im2col':
            h, w = x.shape[1:3]
            xp = jnp.pad(x, ((0, 0), (d, d), (d, d), (0, 0)))
            # Tap (i, j) at channel block 3i + j, matching kernel.reshape(9 * I, O).
            cols = jnp.concatenate(
                [xp[:, i * d : i * d + h, j * d : j * d + w] for i in range(3) for j in range(3)], -1
            )
            y = jnp.einsum('nhwk,ko->nhwo', cols, kernel.reshape(9 * cin, self.features), precision=self.precision)
        else:
            raise ValueError(f'conv impl must be one of {CONV_IMPLS} or None, got {impl!r}')
        return y + bias
