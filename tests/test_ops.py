"""The fast resampling ops of gsd.stylegan2.ops against their literal formulations (tests/reference_ops.py).

For every op, at several shapes and batch sizes, in float32 and bfloat16: the values; the gradients w.r.t. input and
weights; and the second derivatives training takes. R1 differentiates the gradient w.r.t. the discriminator's input
w.r.t. weights (and, for the layers below, input); path-length regularisation differentiates the gradient w.r.t. the
styles that modulate the generator's convs, as modulated activations and as per-sample fused kernels, w.r.t. weights
and input. For the weightless FIR resamplers the "weight" is a per-channel gain in front of them, standing for the
layer that feeds them.
"""

import dataclasses
import functools
import zlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import reference_ops as ref

from gsd.stylegan2 import ops

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Case:
    fast: Callable  # (x, w) -> y, the library's op
    literal: Callable  # (x, w) -> y, its literal form
    x_shape: tuple
    w_shape: tuple
    fused: bool  # whether the generator also folds styles into this op's kernel (a conv with an HWIO weight)


def _conv_case(fast, literal, n, h, w, cin, cout, kernel=(3, 3)):
    return Case(fast, literal, (n, h, w, cin), kernel + (cin, cout), fused=True)


def _gain_case(fast, literal, n, h, w, c):
    return Case(lambda x, g: fast(x * g), lambda x, g: literal(x * g), (n, h, w, c), (c,), fused=False)


_upconv = functools.partial(ops.upconv2x, precision='highest')
_downconv = functools.partial(ops.downconv2x, precision='highest')
# Per op, its cases: batch 1 (the fused path runs it without vmap) and more, square maps and not, maps as small as
# the op allows, so that the borders meet. One program per op holds all its cases: XLA compiles one larger program
# faster than several small ones.
CASES = {
    'upconv2x': {str(s): _conv_case(_upconv, ref.upconv2x, *s) for s in [(1, 4, 4, 3, 5), (3, 1, 3, 4, 2)]},
    'downconv2x': {str(s): _conv_case(_downconv, ref.downconv2x, *s) for s in [(1, 4, 4, 3, 5), (3, 2, 6, 4, 2)]},
    'upsample2x': {str(s): _gain_case(ops.upsample2x, ref.upsample2x, *s) for s in [(1, 4, 4, 3), (3, 1, 3, 2)]},
    'downsample2x': {str(s): _gain_case(ops.downsample2x, ref.downsample2x, *s) for s in [(1, 4, 4, 3), (3, 2, 6, 2)]},
    # The phase convs' custom VJP on its own, at every kernel shape and padding that up- and downconv2x give it:
    # input gradients that crop (padding past the kernel), pad, or pad each axis by its own amount.
    'small_conv': {
        f'k{k}-pad{pad}': _conv_case(
            functools.partial(ops.small_conv, pad=pad, precision='highest'),
            functools.partial(ref.small_conv, pad=pad),
            *(2, 5, 4, 3, 2),
            kernel=k,
        )
        for k in [(1, 1), (1, 2), (2, 1), (2, 2)]
        for pad in [0, 1]
    },
}


def _head(y, ct):
    # A smooth scalar of the op's output, in float32 as the networks take it: smooth so that second derivatives
    # also carry the nonlinearity's curvature (through the op's forward again), and no ReLU kink sits where a
    # rounding difference could flip which side a sample falls on.
    return jnp.sum(jax.nn.softplus(y.astype(F32)) * ct)


def derivatives(case: Case, op: Callable, dtype, x, w, ct, s):
    """The op's output and its first and second derivatives, computed with `op` in `dtype`."""
    x, w = x.astype(dtype), w.astype(dtype)
    head = lambda x, w: _head(op(x, w), ct)
    out = {'y': op(x, w)}
    out['dx'], out['dw'] = jax.grad(head, (0, 1))(x, w)

    # R1: the squared gradient w.r.t. the input.
    r1 = lambda x, w: jnp.sum(jnp.square(jax.grad(head)(x, w).astype(F32)))
    out['r1_dx'], out['r1_dw'] = jax.grad(r1, (0, 1))(x, w)

    # Path length: the squared gradient w.r.t. the styles s (N, I), here modulating the activations...
    def modulated(s, x, w):
        return head((x.astype(F32) * s[:, None, None, :]).astype(dtype), w)

    pl = lambda x, w: jnp.sum(jnp.square(jax.grad(modulated)(s, x, w)))
    out['pl_dx'], out['pl_dw'] = jax.grad(pl, (0, 1))(x, w)

    if case.fused:
        # ...and folded into per-sample kernels, whose gradient w.r.t. s runs through the op's weight gradient.
        def fused(s, x, w):
            wk = (w.astype(F32)[None] * s[:, None, None, :, None]).astype(dtype)
            if x.shape[0] == 1:
                y = op(x, wk[0])
            else:
                y = jax.vmap(lambda xi, wi: op(xi[None], wi)[0])(x, wk)
            return _head(y, ct)

        pl_fused = lambda x, w: jnp.sum(jnp.square(jax.grad(fused)(s, x, w)))
        out['pl_fused_dx'], out['pl_fused_dw'] = jax.grad(pl_fused, (0, 1))(x, w)
    return out


def _inputs(op: str, label: str):
    """x, w, output cotangent and styles, all exactly representable in bfloat16: one oracle serves both dtypes."""
    case = CASES[op][label]
    rng = np.random.default_rng(zlib.crc32(f'{op}/{label}'.encode()))
    exact = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(F32))
    x = exact(rng.normal(size=case.x_shape))
    w = exact(rng.normal(size=case.w_shape))
    ct = exact(rng.normal(size=jax.eval_shape(case.literal, x, w).shape))
    s = exact(1.0 + 0.5 * rng.normal(size=case.x_shape[:1] + case.x_shape[-1:]))
    return x, w, ct, s


# Compiling is nearly all of this file's time. LLVM optimisation level 0 halves it, and XLA:CPU's older elemental
# emitters (instead of its fusion emitters) halve it again; both choose how the program is lowered, not what it
# computes.
_COMPILE_OPTIONS = {'xla_backend_optimization_level': 0, 'xla_cpu_use_fusion_emitters': False}


def _run(op: str, impl: str, dtype, args):
    """derivatives() of every case of `op`, as one program."""
    program = lambda args: {
        label: derivatives(case, getattr(case, impl), dtype, *args[label]) for label, case in CASES[op].items()
    }
    out = jax.jit(program).lower(args).compile(_COMPILE_OPTIONS)(args)
    return jax.tree.map(np.asarray, out)


@functools.lru_cache(maxsize=None)
def _oracle(op: str):
    args = {label: _inputs(op, label) for label in CASES[op]}
    return args, _run(op, 'literal', F32, args)


# Error bounds relative to the largest magnitude of the literal result, by dtype and derivative order (0, 1, 2).
# float32: the fast forms add the same products in other orders (and the custom VJP transposes convs by hand), a
# few roundings of 2^-24 per term summed; measured at most 2^-22.5, 2^-21.9 and 2^-20.9. bfloat16 keeps 8
# significant bits, so each stored intermediate is off by up to 2^-9 relative, and the fast form stores at other
# places than the literal one (phase convs, blur passes, interleave, and again in each derivative); measured at
# most 2^-6.9, 2^-6.7 and 2^-5.1: the bounds allow 16 such roundings (2^-5), 32 in second derivatives (2^-4).
TOL = {
    'float32': {0: 2**-18, 1: 2**-18, 2: 2**-16},
    'bfloat16': {0: 2**-5, 1: 2**-5, 2: 2**-4},
}


@pytest.mark.parametrize(
    'op, dtype',
    # small_conv's bfloat16 path runs inside up- and downconv2x's, at every kernel and padding above: not repeated.
    [(op, dtype) for op in CASES for dtype in ['float32', 'bfloat16'] if (op, dtype) != ('small_conv', 'bfloat16')],
)
def test_fast_op_matches_literal_form(op, dtype):
    args, want = _oracle(op)
    got = _run(op, 'fast', jnp.dtype(dtype), args)
    errors = {}
    for label in CASES[op]:
        assert got[label].keys() == want[label].keys()
        for key, value in got[label].items():
            expected = want[label][key]
            assert value.dtype == dtype, (label, key, value.dtype)  # nothing silently promoted to float32
            assert value.shape == expected.shape, (label, key, value.shape, expected.shape)
            order = 0 if key == 'y' else 1 if key in ('dx', 'dw') else 2
            scale = float(np.abs(expected).max())
            assert scale > 0, (label, key)  # an oracle of zeros would make the comparison vacuous
            err = float(np.abs(value.astype(np.float32) - expected).max()) / scale
            if not err <= TOL[dtype][order]:
                errors[f'{label}/{key}'] = f'{err:.2g}'
    assert not errors, f'relative max errors above {TOL[dtype]}: {errors}'
