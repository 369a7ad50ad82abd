"""Benchmark the auto-shot path: labelled-image generation, UNet training and inference, vs projection.

    python tools/bench_autoshot.py                  # shipped 64 px toy generator, one random CNN head
    python tools/bench_autoshot.py --ensemble 3 --gen-batch 32 --unet-width 32 --unet-batch 32
    python tools/bench_autoshot.py --res 256 --channel-base 32768 --channel-max 512 --z-dim 512 \\
        --w-dim 512 --n-mlp 8                       # config-f-like generator, random weights (slow on CPU)
    python tools/bench_autoshot.py --quick          # tiny counts: a smoke check, numbers meaningless

On whatever device JAX has, against the machine's peak measured in the same run (benchlib):
  1. generation: `gsd.pipeline.autoshot_data.Labeller` (z -> image + the heads' soft labels, fetched to the host)
     over `--gen-batch` images; heads have random weights (timing does not depend on them);
  2. UNet training: `gsd.nn.unet.make_train_step` with the auto-shot augmentation and soft targets;
  3. UNet inference: `gsd.nn.unet.predict` on 64 images at the generator's size and on one 128x192 image;
  4. projection (`gsd.projection.project`, w+, pixel-pyramid loss) of the generator's own images, the
     per-image cost the auto-shot UNet replaces at test time.
Each timed part: the first call (trace + compile + run), then the best of `--repeats` (run only);
compile = first - run. FLOPs are XLA's own count of the compiled program (`cost_analysis`; null when
the backend gives none). Prints readable lines, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from benchlib import best_time, measure_peak
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import augment, features, projection, segmenters, toy
from gsd.io.images import to_uint8
from gsd.nn import unet
from gsd.pipeline import autoshot_data as synthetic
from gsd.stylegan2.networks import Generator, channels_nvidia
from gsd.training import parallel

NUM_CLASSES = 7  # the toy world's classes; their left/right eyes swap under a flip
FLIP_PERMUTATION = (0, 1, 2, 4, 3, 5, 6)
QUICK = dict(repeats=1, ensemble=1, gen_batch=2, unet_batch=2, unet_steps=2, infer_images=4, proj_batch=1, proj_steps=2)


def xla_flops(compiled) -> float | None:
    """FLOPs XLA counts for a compiled program; cost_analysis() is a dict, a list of dicts or None."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends do not implement it
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get('flops')
    return float(flops) if flops and flops > 0 else None


def rate(flops, seconds, peak) -> dict:
    """Achieved GFLOP/s and % of the measured 3x3-conv peak (None without a FLOP count)."""
    g = None if flops is None else flops / seconds / 1e9
    return {'gflop': flops and flops / 1e9, 'gflops': g, 'pct_of_conv_peak': g and 100 * g / peak['conv3x3_gflops']}


def fmt_rate(r: dict) -> str:
    if r['gflops'] is None:
        return 'FLOPs n/a'
    return f'{r["gflops"]:.1f} GFLOP/s = {r["pct_of_conv_peak"]:.0f}% of conv peak'


def timed(fn, repeats: int) -> tuple[float, float]:
    """(compile s, run s): best_time's warm-up call is the compiling one; time it too."""
    first = []

    def call():
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        first.append(time.perf_counter() - t)
        return out

    run = best_time(call, repeats=repeats)
    return max(first[0] - run, 0.0), run


def generator(args):
    if args.res is None:
        return toy.pretrained()
    g = Generator(
        args.res,
        channels_nvidia(args.res, args.channel_base, args.channel_max),
        z_dim=args.z_dim,
        w_dim=args.w_dim,
        n_mlp=args.n_mlp,
    )
    return g, jax.jit(g.init)(jax.random.PRNGKey(0), jnp.zeros((1, args.z_dim)))


def bench_generation(module, variables, mesh, args, peak) -> dict:
    extractor = features.FeatureExtractor(module, module.resolution, None)  # None: the paper's layers
    head = segmenters.make_head('cnn', NUM_CLASSES, extractor.layout)
    example = extractor.example_activations()
    keys = jax.random.split(jax.random.PRNGKey(1), args.ensemble)
    params = jax.vmap(lambda k: head.init(k, example)['params'])(keys)  # leading member axis
    seg = segmenters.GANSegmenter(module, variables, extractor, head, params, toy.CLASSES)
    labeller = synthetic.Labeller(seg, 0, 0.7, mesh)
    index = np.arange(args.gen_batch)
    compile_s, run_s = timed(lambda: labeller(index), args.repeats)
    # A second compile of the same program, for its FLOP count only (after the timing).
    idx = jax.device_put(index.astype(np.int32), NamedSharding(mesh, P('data')))
    flops = xla_flops(labeller._run.lower(params, variables, idx).compile())
    out = {
        'batch': args.gen_batch,
        'ensemble': args.ensemble,
        'feature_channels': extractor.channels,
        'compile_s': compile_s,
        'run_s': run_s,
        'images_per_s': args.gen_batch / run_s,
        's_per_image': run_s / args.gen_batch,
        **rate(flops, run_s, peak),
    }
    print(
        f'generation: {out["images_per_s"]:.1f} labelled images/s (batch {args.gen_batch}, {args.ensemble} '
        f'head(s), {extractor.channels} feature channels; compile {compile_s:.1f} s; {fmt_rate(out)})',
        flush=True,
    )
    return out


def bench_unet(size: int, mesh, args, peak) -> dict:
    model = unet.UNet(NUM_CLASSES, args.unet_width, 4, 8, jnp.float32, 'xla')
    tx = optax.adam(1e-3)
    state = unet.create_state(model, tx, jax.random.key(0), mesh=parallel.mesh())
    step = unet.make_train_step(
        model, tx, mesh, soft=True, augment_fn=functools.partial(augment.augment, flip_permutation=FLIP_PERMUTATION)
    )
    rng = np.random.RandomState(0)
    data = NamedSharding(mesh, P('data'))
    images = jax.device_put(rng.randint(0, 256, (args.unet_batch, size, size, 3)).astype(np.uint8), data)
    logits = jax.device_put(rng.randn(args.unet_batch, size, size, NUM_CLASSES).astype(np.float16), data)
    keys = [jax.random.key(i) for i in range(args.unet_steps)]
    # Compile explicitly: the compile time is measured directly and the same executable gives the
    # FLOP count, so the step is compiled once.
    t = time.perf_counter()
    compiled = step.lower(state, images, logits, keys[0]).compile()
    compile_s = time.perf_counter() - t

    def train():
        nonlocal state
        for k in keys:
            state, metrics = compiled(state, images, logits, k)  # state is donated: always rebind it
        return metrics

    run_s = best_time(train, repeats=args.repeats) / args.unet_steps
    train_out = {
        'batch': args.unet_batch,
        'size': size,
        'width': args.unet_width,
        'compile_s': compile_s,
        's_per_step': run_s,
        'steps_per_s': 1 / run_s,
        'images_per_s': args.unet_batch / run_s,
        **rate(xla_flops(compiled), run_s, peak),
    }
    print(
        f'unet train: {train_out["steps_per_s"]:.2f} steps/s = {train_out["images_per_s"]:.1f} images/s '
        f'(batch {args.unet_batch}, {size} px, width {args.unet_width}; compile {compile_s:.1f} s; '
        f'{fmt_rate(train_out)})',
        flush=True,
    )

    many = rng.randint(0, 256, (args.infer_images, size, size, 3)).astype(np.uint8)
    one = rng.randint(0, 256, (128, 192, 3)).astype(np.uint8)  # H x W: a non-square image
    c_many, r_many = timed(
        lambda: unet.predict(model, state.params, many, batch_size=32, output='labels'), args.repeats
    )
    c_one, r_one = timed(lambda: unet.predict(model, state.params, one, batch_size=32, output='labels'), args.repeats)
    infer = {
        'images': args.infer_images,
        'size': size,
        'compile_s': c_many,
        'images_per_s': args.infer_images / r_many,
        's_per_image': r_many / args.infer_images,
        'single_128x192_ms': 1e3 * r_one,
        'single_compile_s': c_one,
    }
    print(
        f'unet inference: {infer["images_per_s"]:.1f} images/s ({args.infer_images} x {size} px, batch 32); '
        f'one 128x192 image {infer["single_128x192_ms"]:.1f} ms',
        flush=True,
    )
    return {'train': train_out, 'inference': infer}


def bench_projection(module, variables, args) -> dict:
    z = jax.random.normal(jax.random.PRNGKey(2), (args.proj_batch, module.z_dim))
    targets = to_uint8(module.apply(variables, module.apply(variables, z, method='map'), method='synthesize'))
    run = lambda: (
        projection.project(
            module, variables, targets, steps=args.proj_steps, space='w+', perceptual=projection.PixelPyramidLoss()
        ).ws
    )
    compile_s, run_s = timed(run, args.repeats)
    out = {
        'batch': args.proj_batch,
        'steps': args.proj_steps,
        'compile_s': compile_s,
        'run_s': run_s,
        's_per_image': run_s / args.proj_batch,
    }
    print(
        f'projection: {out["s_per_image"]:.3f} s/image ({args.proj_steps} steps, w+, batch {args.proj_batch}; '
        f'compile {compile_s:.1f} s)',
        flush=True,
    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, help='random-weight generator at this resolution (default: shipped toy)')
    ap.add_argument('--channel-base', type=int, default=2048)
    ap.add_argument('--channel-max', type=int, default=64)
    ap.add_argument('--z-dim', type=int, default=128)
    ap.add_argument('--w-dim', type=int, default=128)
    ap.add_argument('--n-mlp', type=int, default=4)
    ap.add_argument('--ensemble', type=int, default=1, help='heads labelling each image')
    ap.add_argument('--gen-batch', type=int, default=16, help='divisible by the device count')
    ap.add_argument('--unet-width', type=int, default=16)
    ap.add_argument('--unet-batch', type=int, default=16)
    ap.add_argument('--unet-steps', type=int, default=20, help='train steps per timed repeat')
    ap.add_argument('--infer-images', type=int, default=64)
    ap.add_argument('--proj-batch', type=int, default=8)
    ap.add_argument('--proj-steps', type=int, default=200, help="200: the toy demo's setting")
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--quick', action='store_true', help='tiny counts (flags given explicitly still win)')
    args = ap.parse_args()
    if args.quick:
        ap.set_defaults(**QUICK)
        args = ap.parse_args()
    devices = jax.local_devices()
    if args.gen_batch % len(devices) or args.unet_batch % len(devices):
        ap.error(f'--gen-batch and --unet-batch must be divisible by the {len(devices)} devices')

    dev = devices[0]
    print(
        f'device: {dev.platform} {dev.device_kind} x{len(devices)}, host {platform.processor() or platform.machine()}'
    )
    peak = measure_peak(max(args.repeats, 3))  # even --quick: a noisy peak makes the % meaningless
    print(f'peak: matmul {peak["matmul_gflops"]:.0f} GFLOP/s, 3x3 conv {peak["conv3x3_gflops"]:.0f} GFLOP/s')
    module, variables = generator(args)
    print(
        f'generator: {"random weights" if args.res else "shipped toy"}, {module.resolution} px, '
        f'channels {list(module.channels)}',
        flush=True,
    )
    mesh = parallel.mesh(devices)
    gen = bench_generation(module, variables, mesh, args, peak)
    net = bench_unet(module.resolution, mesh, args, peak)
    proj = bench_projection(module, variables, args)
    ratios = {
        'projection_vs_unet_inference': proj['s_per_image'] / net['inference']['s_per_image'],
        'projection_vs_generation': proj['s_per_image'] / gen['s_per_image'],
    }
    print(
        f'projection costs {ratios["projection_vs_unet_inference"]:.0f}x UNet inference and '
        f'{ratios["projection_vs_generation"]:.0f}x generating a labelled image, per image'
    )
    print(
        json.dumps(
            {
                'bench': 'autoshot',
                'device': f'{dev.platform}:{dev.device_kind}',
                'devices': len(devices),
                'jax': jax.__version__,
                'config': vars(args),
                'channels': list(module.channels),
                'peak': peak,
                'generation': gen,
                'unet': net,
                'projection': proj,
                'ratios': ratios,
            }
        )
    )


if __name__ == '__main__':
    main()
