"""Benchmark few-shot head training: peak memory (RSS) and time, fused first layer vs concatenated features.

    python tools/bench_fewshot.py                       # 10 shots, config-f generator (random weights), 256 + 512 px
    python tools/bench_fewshot.py --res 128 256 --steps 10

Each (resolution, mode) runs in its own subprocess so its peak RSS (ru_maxrss) is its own. The child
builds a config-f StyleGAN2 at that resolution with random weights, captures every synthesis conv
from 8 px to full resolution for `--shots` images (the authors' layer set) one image at a time into
buffers allocated once (`FeatureExtractor.stored_activations`), stored in `--dtype` (default
bfloat16: half the memory; the head widens them and computes in float32, see gsd.nn.heads), and trains
the paper's CNN head with `gsd.nn.heads.train_heads` (one image per step) for `--steps` steps, twice:
the first call compiles, the second is timed. The peak RSS is reported after the features and at the
end (features + the training program's compile and run). Modes:
  fused  - the head's first layer runs per layer at the layer's own resolution (gsd's default);
  naive  - the (shots, S, S, C) concatenated map is built first (what the authors' code does).
A mode whose feature storage alone would exceed half of this machine's RAM is not run; its estimate
is printed instead. Also reports the paper's schedule (1000 epochs) extrapolated from the measured
step time. Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def child(res: int, mode: str, shots: int, steps: int, dtype: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gsd import features
    from gsd.nn import heads
    from gsd.stylegan2 import Generator, channels_nvidia

    g = Generator(res, channels_nvidia(res), z_dim=512, w_dim=512, n_mlp=8)
    variables = jax.jit(g.init)(jax.random.PRNGKey(0), jnp.zeros((1, 512)))
    ext = features.FeatureExtractor(g, res)
    z = jax.random.normal(jax.random.PRNGKey(1), (shots, 512))
    ws = jax.jit(lambda v, z: g.apply(v, z, method='map'))(variables, z)
    t0 = time.perf_counter()
    # One image at a time into buffers allocated once: the generator's own peak stays that of batch 1.
    acts = ext.stored_activations(variables, ws, batch_size=1, dtype=dtype)
    jax.block_until_ready(acts)
    t_features = time.perf_counter() - t0
    rss_features = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    labels = jnp.asarray(np.random.RandomState(0).randint(0, 10, (shots, res, res)), jnp.int32)
    if mode == 'naive':
        data = ext.layout.concat(acts, jnp.float32)
        del acts
        head = heads.CNNHead(10, in_features=ext.channels)
    else:
        data = acts
        head = heads.CNNHead(10, in_features=ext.channels, first_layer_fused=True, layout=ext.layout)
    # `steps` steps = epochs of `shots` images each when steps is a multiple of shots.
    epochs = max(1, steps // shots)
    keys = jax.random.split(jax.random.key(0), 1)
    run = lambda: jax.block_until_ready(heads.train_heads(head, keys, data, labels, epochs=epochs))
    t0 = time.perf_counter()
    run()
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    t_run = time.perf_counter() - t0
    step = t_run / (epochs * shots)
    return {
        'resolution': res,
        'mode': mode,
        'shots': shots,
        'channels': ext.channels,
        'steps': epochs * shots,
        'features_seconds': round(t_features, 2),
        'compile_and_first_seconds': round(t_first, 2),
        'seconds_per_step': round(step, 4),
        'paper_schedule_hours': round(step * 1000 * shots / 3600, 2),
        'dtype': dtype,
        'peak_rss_features_gb': round(rss_features, 3),
        'peak_rss_gb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        'device': str(jax.devices()[0]),
    }


def machine_ram_gb() -> float:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30


def feature_gb(res: int, shots: int) -> float:
    from gsd import features
    from gsd.stylegan2 import block_resolutions, channels_nvidia

    per_block = dict(zip(block_resolutions(res), channels_nvidia(res)))
    c = sum(per_block[features.layer_resolution(n)] for n in features.select_layers(res))
    return shots * res * res * c * 4 / 2**30


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, nargs='+', default=[256, 512])
    ap.add_argument('--modes', nargs='+', default=['fused', 'naive'], choices=['fused', 'naive'])
    ap.add_argument('--shots', type=int, default=10)
    ap.add_argument('--steps', type=int, default=10, help='timed head-training steps (one image each)')
    ap.add_argument(
        '--dtype',
        default='bfloat16',
        choices=['bfloat16', 'float32'],
        help='storage dtype of the captured activations (the head computes in float32 either way)',
    )
    ap.add_argument('--child', nargs=2, metavar=('RES', 'MODE'), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.shots, args.steps, args.dtype)))
        return
    from benchlib import measure_peak

    peak = measure_peak()
    ram = machine_ram_gb()
    print(
        f'machine: {ram:.1f} GB RAM; peak matmul {peak["matmul_gflops"]:.0f} GFLOP/s, '
        f'3x3 conv {peak["conv3x3_gflops"]:.0f} GFLOP/s'
    )
    results = []
    for res in args.res:
        for mode in args.modes:
            need = feature_gb(res, args.shots)
            if mode == 'naive' and need > ram / 2:
                r = {
                    'resolution': res,
                    'mode': mode,
                    'not_run': f'the concatenated map alone is {need:.1f} GB (float32) on a {ram:.0f} GB machine',
                }
                print(f'{res} px {mode}: not run: {r["not_run"]}')
                results.append(r)
                continue
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    '--child',
                    str(res),
                    mode,
                    '--shots',
                    str(args.shots),
                    '--steps',
                    str(args.steps),
                    '--dtype',
                    args.dtype,
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                r = {'resolution': res, 'mode': mode, 'failed': proc.stderr.strip().splitlines()[-1:]}
            else:
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                print(
                    f'{res} px {mode}: {r["channels"]} channels ({r["dtype"]}), peak RSS {r["peak_rss_gb"]:.2f} GB '
                    f'({r["peak_rss_features_gb"]:.2f} GB after the features), '
                    f"{r['seconds_per_step']:.3f} s/step ({r['paper_schedule_hours']} h for the paper's 1000 "
                    f'epochs of {args.shots} shots), features {r["features_seconds"]} s, '
                    f'first call {r["compile_and_first_seconds"]} s'
                )
            results.append(r)
    print(json.dumps({'peak': peak, 'ram_gb': round(ram, 1), 'results': results}))


if __name__ == '__main__':
    main()
