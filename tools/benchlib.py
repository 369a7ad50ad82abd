"""What the tools/bench_*.py scripts share: best-of-N timing, the machine's measured peak, and FLOP counts."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from gsd.stylegan2.networks import block_resolutions


def best_time(fn, *args, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call (which also compiles)."""
    jax.block_until_ready(fn(*args))
    best = float('inf')
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def measure_peak(repeats: int = 5) -> dict:
    """float32 GFLOP/s of a 2048^3 matmul and of a 3x3 conv (32x32x256 -> 256, batch 16)."""
    a = jnp.asarray(np.random.RandomState(0).randn(2048, 2048), jnp.float32)
    t_mm = best_time(jax.jit(lambda a: a @ a), a, repeats=repeats)
    x = jnp.ones((16, 32, 32, 256), jnp.float32)
    w = jnp.ones((3, 3, 256, 256), jnp.float32) * 0.01
    conv = jax.jit(
        lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    )
    t_conv = best_time(conv, x, w, repeats=repeats)
    return {
        'matmul_gflops': 2 * 2048**3 / t_mm / 1e9,
        'conv3x3_gflops': 2 * 16 * 32 * 32 * 256 * 256 * 9 / t_conv / 1e9,
    }


def synthesis_gmac(resolution: int, channels) -> float:
    """Multiply-adds of the synthesis convs per image, each upsampling conv counted as the transposed
    conv at its input resolution (the reference's count: 45 GMAC at 256 px, 74 at 1024 px config-f)."""
    ch = dict(zip(block_resolutions(resolution), channels))
    mac = 0
    for r in block_resolutions(resolution):
        if r > 4:
            mac += 9 * ch[r // 2] * ch[r] * (r // 2) ** 2
        mac += 9 * ch[r] * ch[r] * r * r
    return mac / 1e9


def discriminator_gmac(resolution: int, channels) -> float:
    """Multiply-adds of the discriminator per image (stride-2 convs at their output resolution)."""
    ch = dict(zip(block_resolutions(resolution), channels))
    mac = 3 * ch[resolution] * resolution**2
    for r in block_resolutions(resolution)[:0:-1]:
        lo = r // 2
        mac += 9 * ch[r] * ch[r] * r * r + 9 * ch[r] * ch[lo] * lo * lo + ch[r] * ch[lo] * lo * lo
    mac += 9 * (ch[4] + 1) * ch[4] * 16 + 16 * ch[4] * ch[4] + ch[4]
    return mac / 1e9
