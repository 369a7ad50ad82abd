"""Benchmark the StyleGAN2 generator: images/s and GFLOP/s against this machine's measured peak.

    python tools/bench_generator.py                 # 256 and 1024 px config-f, batch 1 and 8
    python tools/bench_generator.py --res 256 --batch 1 --repeats 3 --dtype float32 bfloat16

Measures in one run: the peak (a 2048^3 float32 matmul and a 3x3 conv, 32x32x256 -> 256, batch 16),
then for each resolution and batch the jitted forward pass (random weights, const noise) and the
gradient of an image loss w.r.t. w+ and every noise map (what projection runs). FLOPs are counted
the way the reference figures count them: 2 x the multiply-adds of the synthesis convs, with each
upsampling conv counted as the transposed conv at its input resolution (45 GMAC at 256 px,
74 GMAC at 1024 px for config-f). Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import platform

import jax
import jax.numpy as jnp
from benchlib import best_time, measure_peak, synthesis_gmac

from gsd.stylegan2.networks import Generator, channels_nvidia, noise_layer_names


def bench_config(resolution: int, batch: int, repeats: int, peak: dict, dtype: str = 'float32') -> dict:
    g = Generator(resolution, channels_nvidia(resolution), z_dim=512, w_dim=512, n_mlp=8, dtype=jnp.dtype(dtype))
    key = jax.random.PRNGKey(0)
    variables = jax.jit(g.init)(key, jnp.zeros((1, 512)))
    z = jax.random.normal(key, (batch, 512))
    ws = g.apply(variables, z, method='map')

    forward = jax.jit(lambda v, ws: g.apply(v, ws, noise_mode='const', method='synthesize'))
    t_fwd = best_time(forward, variables, ws, repeats=repeats)
    compiles_fwd = forward._cache_size()

    target = forward(variables, ws) * 0.5
    noise = {}
    for name in noise_layer_names(resolution):
        r = int(name.split('.')[0][1:])  # 'b64.conv0' -> 64
        noise[name] = jax.random.normal(jax.random.fold_in(key, r), (batch, r, r))

    g_grad = g.clone(fused_modconv=False)  # what projection uses: no gradient through conv kernels

    def loss(ws, noise, v, target):
        img = g_grad.apply(v, ws, noise=noise, method='synthesize')
        return jnp.mean(jnp.square(img - target))

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    t_grad = best_time(grad, ws, noise, variables, target, repeats=max(1, repeats // 2))
    compiles_grad = grad._cache_size()

    gflop = 2 * synthesis_gmac(resolution, g.channels) * batch
    out = {
        'resolution': resolution,
        'batch': batch,
        'dtype': dtype,
        'forward_s': t_fwd,
        'images_per_s': batch / t_fwd,
        'forward_gflops': gflop / t_fwd,
        'forward_pct_of_conv_peak': 100 * gflop / t_fwd / peak['conv3x3_gflops'],
        'grad_s': t_grad,
        'grad_over_forward': t_grad / t_fwd,
        'compiles_forward': compiles_fwd,
        'compiles_grad': compiles_grad,
    }
    print(
        f'{resolution:5d} px batch {batch} {dtype}: {out["images_per_s"]:.2f} img/s '
        f'({t_fwd * 1e3:.0f} ms/call, {out["forward_gflops"]:.0f} GFLOP/s = '
        f'{out["forward_pct_of_conv_peak"]:.0f}% of conv peak); grad w.r.t. w+ and noise '
        f'{t_grad * 1e3:.0f} ms = {out["grad_over_forward"]:.2f}x forward; compiles {compiles_fwd}/{compiles_grad}',
        flush=True,
    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, nargs='+', default=[256, 1024])
    ap.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    ap.add_argument('--repeats', type=int, default=5)
    ap.add_argument(
        '--dtype', nargs='+', default=['float32'], choices=['float32', 'bfloat16'], help='conv compute dtype'
    )
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(
        f'device: {dev.platform} {dev.device_kind} x{jax.device_count()}, '
        f'host {platform.processor() or platform.machine()}'
    )
    peak = measure_peak(args.repeats)
    print(f'peak: matmul {peak["matmul_gflops"]:.0f} GFLOP/s, 3x3 conv {peak["conv3x3_gflops"]:.0f} GFLOP/s')
    results = [bench_config(r, b, args.repeats, peak, d) for d in args.dtype for r in args.res for b in args.batch]
    peak_after = measure_peak(args.repeats)
    print(
        f'peak again after the runs: matmul {peak_after["matmul_gflops"]:.0f}, '
        f'conv {peak_after["conv3x3_gflops"]:.0f} GFLOP/s'
    )
    print(
        json.dumps(
            {
                'bench': 'generator',
                'device': f'{dev.platform}:{dev.device_kind}',
                'jax': jax.__version__,
                'peak': peak,
                'peak_after': peak_after,
                'results': results,
            }
        )
    )


if __name__ == '__main__':
    main()
