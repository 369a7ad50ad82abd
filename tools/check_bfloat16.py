"""bfloat16 against float32 compute, for the generator, the heads' features and the UNet, on any device.

    python tools/check_bfloat16.py                  # shipped toy generator, 64 samples; random UNet
    python tools/check_bfloat16.py --res 256        # also a config-f generator at 256 px (random weights)

Generator: the same w (seed 0, psi 1) through the synthesis in both dtypes; the largest and mean
absolute image difference in [-1, 1] and in 8-bit levels, and the PSNR between them. Features: the
activations the heads read (every synthesis conv of the toy generator), relative error of bfloat16.
UNet: the auto-shot UNet (random weights, toy images) in both dtypes; the largest logit difference and
the share of pixels whose class changes. Also the time of one call in each dtype (after compiling).
Prints readable lines, then one JSON object as the last line. What bfloat16 does to the toy demo's IoU
is measured by the demo itself (`--config.generator.dtype=bfloat16 --config.fewshot.feature_dtype=bfloat16
--config.autoshot.dtype=bfloat16`; figures in README's bfloat16 section).
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import toy
from gsd.nn import unet
from gsd.stylegan2 import generator
from gsd.stylegan2.networks import Generator, channels_nvidia


def timed(fn, *args):
    jax.block_until_ready(fn(*args))
    t = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t


def compare_images(name: str, g32, variables, ws) -> dict:
    g16 = g32.clone(dtype=jnp.bfloat16)
    f32 = jax.jit(lambda v, w: g32.apply(v, w, noise_mode='const', method='synthesize'))
    f16 = jax.jit(lambda v, w: g16.apply(v, w, noise_mode='const', method='synthesize'))
    a, t32 = timed(f32, variables, ws)
    b, t16 = timed(f16, variables, ws)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    diff = np.abs(a - b)
    levels = np.abs(np.round((a + 1) * 127.5).clip(0, 255) - np.round((b + 1) * 127.5).clip(0, 255))
    mse = np.mean(np.square((a - b) / 2))
    out = {
        'images': int(a.shape[0]),
        'resolution': int(a.shape[1]),
        'max_abs_diff': float(diff.max()),
        'mean_abs_diff': float(diff.mean()),
        'max_diff_8bit_levels': float(levels.max()),
        'mean_diff_8bit_levels': float(levels.mean()),
        'psnr_db': float(10 * np.log10(1.0 / max(mse, 1e-20))),
        'seconds_float32': t32,
        'seconds_bfloat16': t16,
    }
    print(
        f'{name}: largest pixel difference {out["max_abs_diff"]:.4f} in [-1, 1] ({out["max_diff_8bit_levels"]:.0f} '
        f'of 255 levels; mean {out["mean_diff_8bit_levels"]:.2f}), PSNR {out["psnr_db"]:.1f} dB; '
        f'{t32 * 1e3:.0f} ms float32, {t16 * 1e3:.0f} ms bfloat16',
        flush=True,
    )
    return out


def compare_features(g32, variables, ws) -> dict:
    """Relative error of every synthesis conv's activation (what the heads read) in bfloat16."""
    g16 = g32.clone(dtype=jnp.bfloat16)

    def acts(g):
        _, state = g.apply(
            variables,
            ws,
            noise_mode='const',
            method='synthesize',
            capture_intermediates=True,
            mutable=['intermediates'],
        )
        return {
            jax.tree_util.keystr(k): np.asarray(v, np.float32)
            for k, v in jax.tree_util.tree_leaves_with_path(state['intermediates'])
        }

    a, b = acts(g32), acts(g16)
    rel = {k: float(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(a[k]), 1e-12)) for k in a if k in b}
    worst = max(rel, key=rel.get)
    print(
        f'features: {len(rel)} captured tensors, relative error median {np.median(list(rel.values())):.4f}, '
        f'largest {rel[worst]:.4f} ({worst})',
        flush=True,
    )
    return {
        'tensors': len(rel),
        'median_relative_error': float(np.median(list(rel.values()))),
        'max_relative_error': rel[worst],
        'worst': worst,
    }


def compare_unet(images: np.ndarray) -> dict:
    m32 = unet.UNet(7, 16, 4, 8, jnp.float32)
    m16 = unet.UNet(7, 16, 4, 8, jnp.bfloat16)
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    params = m32.init(jax.random.key(0), x[:1])
    a, t32 = timed(jax.jit(m32.apply), params, x)
    b, t16 = timed(jax.jit(m16.apply), params, x)
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    out = {
        'max_logit_diff': float(np.abs(a - b).max()),
        'logit_scale': float(np.abs(a).max()),
        'class_changed_share': float(np.mean(a.argmax(-1) != b.argmax(-1))),
        'seconds_float32': t32,
        'seconds_bfloat16': t16,
    }
    print(
        f'unet: largest logit difference {out["max_logit_diff"]:.4f} (logits up to {out["logit_scale"]:.2f}); '
        f'{100 * out["class_changed_share"]:.2f}% of pixels change class; '
        f'{t32 * 1e3:.0f} ms float32, {t16 * 1e3:.0f} ms bfloat16',
        flush=True,
    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--samples', type=int, default=64)
    ap.add_argument('--res', type=int, nargs='*', default=[], help='also config-f generators (random weights)')
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f'device: {dev.platform} {dev.device_kind}', flush=True)
    g, variables = generator.build_generator(ml_collections.ConfigDict({'checkpoint': generator.TOY_CHECKPOINT}))
    z = generator.latents(jax.random.PRNGKey(0), jnp.arange(args.samples), g.z_dim)
    ws = g.apply(variables, z, method='map')
    result = {'device': f'{dev.platform}:{dev.device_kind}', 'jax': jax.__version__}
    result['toy_generator'] = compare_images('toy generator (shipped, 64 px)', g, variables, ws)
    result['toy_features'] = compare_features(g, variables, ws[:8])
    for res in args.res:
        big = Generator(res, channels_nvidia(res), z_dim=512, w_dim=512, n_mlp=8)
        v = jax.jit(big.init)(jax.random.PRNGKey(0), jnp.zeros((1, 512)))
        w = big.apply(v, jax.random.normal(jax.random.PRNGKey(1), (2, 512)), method='map')
        result[f'config_f_{res}'] = compare_images(f'config-f generator, {res} px (random weights)', big, v, w)
    images, _ = toy.sample(16, seed=4_000_000)
    result['unet'] = compare_unet(images)
    print(json.dumps(result))


if __name__ == '__main__':
    main()
