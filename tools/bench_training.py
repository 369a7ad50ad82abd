"""Benchmark one full StyleGAN2 training step (G and D gradients and Adam updates) against the conv peak.

    python tools/bench_training.py                      # 64 px, 128 channels max, batch 32
    python tools/bench_training.py --res 64 --channel-max 64 --batch 32

FLOPs are the useful ones: a step costs 3 generator forwards (forward + backward) plus 8
discriminator forwards (G step: D forward and input gradient; D step: forward on fakes and reals
and their backward), each forward counted as 2 x its conv multiply-adds (upsampling convs at their
input resolution, stride-2 convs at their output resolution). Also times the lazy R1 step. Prints
readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json

import jax
import ml_collections
import numpy as np
from benchlib import best_time, discriminator_gmac, measure_peak, synthesis_gmac

from gsd.pipeline.train_gan import GANTrainer


def gan_config(res: int, channel_max: int, batch: int) -> ml_collections.ConfigDict:
    base = channel_max * 32  # channel_max down to 32 px, then halving with resolution
    return ml_collections.ConfigDict(
        dict(
            resolution=res,
            channel_base=base,
            channel_max=channel_max,
            z_dim=512,
            w_dim=512,
            n_mlp=8,
            mapping_lr_mul=0.01,
            mbstd_group_size=4,
            batch_size=batch,
            lr_g=0.0025,
            lr_d=0.0025,
            r1_gamma=1.0,
            r1_interval=16,
            pl_weight=0.0,
            pl_interval=4,
            pl_batch_shrink=2,
            pl_decay=0.01,
            style_mixing_prob=0.9,
            ema_kimg=10.0,
            ema_rampup=0.05,
            w_avg_beta=0.995,
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, default=64)
    ap.add_argument('--channel-max', type=int, default=128)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--repeats', type=int, default=3)
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f'device: {dev.platform} {dev.device_kind} x{jax.device_count()}')
    peak = measure_peak()
    print(f'peak: matmul {peak["matmul_gflops"]:.0f} GFLOP/s, 3x3 conv {peak["conv3x3_gflops"]:.0f} GFLOP/s')

    cfg = gan_config(args.res, args.channel_max, args.batch)
    trainer = GANTrainer(cfg)
    state = trainer.init_state(0)
    real = trainer.put_batch(np.random.RandomState(0).randint(0, 256, (args.batch, args.res, args.res, 3), np.uint8))

    # The steps donate their state; thread it through so every timed call is a real step.
    holder = {'state': state}

    def step(real):
        holder['state'], m = trainer.train_step(holder['state'], real)
        return m['loss/G']

    def r1(real):
        holder['state'], m = trainer.r1_step(holder['state'], real)
        return m['reg/r1_penalty']

    t_step = best_time(step, real, repeats=args.repeats)
    t_r1 = best_time(r1, real, repeats=max(1, args.repeats - 1))
    channels = trainer.G.channels
    g_gmac, d_gmac = synthesis_gmac(args.res, channels), discriminator_gmac(args.res, channels)
    gflop = 2 * (3 * g_gmac + 8 * d_gmac) * args.batch
    out = {
        'resolution': args.res,
        'channels': list(channels),
        'batch': args.batch,
        'step_s': t_step,
        'images_per_s': args.batch / t_step,
        'step_gflop': gflop,
        'gflops': gflop / t_step,
        'pct_of_conv_peak': 100 * gflop / t_step / peak['conv3x3_gflops'],
        'r1_step_s': t_r1,
        'compiles': {'train_step': trainer.train_step._cache_size(), 'r1_step': trainer.r1_step._cache_size()},
    }
    print(
        f'{args.res} px, channels {list(channels)}, batch {args.batch}: step {t_step:.2f} s = '
        f'{out["images_per_s"]:.1f} img/s, {out["gflops"]:.0f} GFLOP/s = {out["pct_of_conv_peak"]:.0f}% of the '
        f'conv peak; lazy R1 step {t_r1:.2f} s; compiles {out["compiles"]}'
    )
    peak_after = measure_peak()
    print(
        f'peak again after: matmul {peak_after["matmul_gflops"]:.0f}, conv {peak_after["conv3x3_gflops"]:.0f} GFLOP/s'
    )
    print(
        json.dumps(
            {
                'bench': 'training',
                'device': f'{dev.platform}:{dev.device_kind}',
                'jax': jax.__version__,
                'peak': peak,
                'peak_after': peak_after,
                'result': out,
            }
        )
    )


if __name__ == '__main__':
    main()
