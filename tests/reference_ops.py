"""Literal formulations of StyleGAN2's resampling ops: the oracle for the fast rewrites in gsd.stylegan2.ops.

Written the way the upstream code states them (zero insertion, padding, depthwise FIR, transposed and strided
convs), in float32 at 'highest' precision, and differentiated by plain JAX autodiff. Nothing here imports the
library, so a mistake shared by both cannot hide. All arrays are NHWC; conv weights are HWIO.
"""

import jax
import jax.numpy as jnp
import numpy as np

# StyleGAN2's resampling filter [1, 3, 3, 1], normalised to sum 1 in 1-D.
FIR_1D = np.array([1.0, 3.0, 3.0, 1.0]) / 8.0
DIMS = ('NHWC', 'HWIO', 'NHWC')


def correlate(x, w, *, stride=1, padding='VALID', lhs_dilation=None):
    return jax.lax.conv_general_dilated(
        x, w, (stride, stride), padding, lhs_dilation=lhs_dilation, dimension_numbers=DIMS, precision='highest'
    )


def upfirdn2d(x, *, up: int = 1, down: int = 1, pad=(0, 0), gain: float = 1.0):
    """upfirdn2d with the FIR filter: zero-insert `up`, pad, depthwise filter, keep every `down`-th sample."""
    n, h, w, c = x.shape
    if up > 1:
        z = jnp.zeros((n, h, up, w, up, c), x.dtype).at[:, :, 0, :, 0, :].set(x)
        x = z.reshape(n, h * up, w * up, c)
    x = jnp.pad(x, ((0, 0), pad, pad, (0, 0)))
    f = jnp.asarray(np.outer(FIR_1D, FIR_1D) * gain, x.dtype)
    k = jnp.tile(f[:, :, None, None], (1, 1, 1, c))
    x = jax.lax.conv_general_dilated(
        x, k, (1, 1), 'VALID', dimension_numbers=DIMS, feature_group_count=c, precision='highest'
    )
    return x[:, ::down, ::down, :]


def upsample2x(x):
    """The generator's RGB skip upsampler: upfirdn2d(up=2, padding (2, 1), gain 4)."""
    return upfirdn2d(x, up=2, pad=(2, 1), gain=4.0)


def downsample2x(x):
    """The discriminator's skip downsampler: upfirdn2d(down=2, padding (1, 1))."""
    return upfirdn2d(x, down=2, pad=(1, 1))


def upconv2x(x, w):
    """conv_transpose2d(x, w, stride=2) (scatter, no flip), then the blur with padding (1, 1) and gain 4."""
    # A scatter-transposed conv is a correlation of the zero-inserted input with the flipped kernel.
    y = correlate(x, w[::-1, ::-1], padding=((2, 2), (2, 2)), lhs_dilation=(2, 2))
    return upfirdn2d(y, pad=(1, 1), gain=4.0)


def downconv2x(x, w):
    """The blur with padding (2, 2), then a stride-2 3x3 correlation."""
    return correlate(upfirdn2d(x, pad=(2, 2)), w, stride=2)


def small_conv(x, w, pad: int):
    """Correlation with `pad` zeros on every side, with JAX's own gradients (no custom VJP)."""
    return correlate(x, w, padding=((pad, pad), (pad, pad)))
