"""Benchmark projection (gsd.projection.project): seconds per image at batch 1 and 8, compile time apart.

    python tools/bench_projection.py                          # toy generator's architecture, 64 px, 1000 steps
    python tools/bench_projection.py --steps 50 --batch 1 8
    python tools/bench_projection.py --res 256 --channel-base 32768 --channel-max 512 --z-dim 512 \\
        --w-dim 512 --n-mlp 8 --steps 100                     # config-f-like (slow on CPU)
    python tools/bench_projection.py --loss lpips [--vgg16 vgg16-397923af.pth --lpips-weights vgg.pth]
    python tools/bench_projection.py --real 100 --steps 200 40 --encoder gsd:toy_encoder   # quality, see below

The generator has random weights (timing does not depend on them); the targets are its own images.
`--loss lpips` without weight files uses random weights of the real VGG16 shapes (timing only). For
each batch size: the first call (trace + compile + run), then the best of `--repeats` further calls
(run only); compile = first - run. s/image = run / batch; ms/step = run / steps. GFLOP/s counts a step
as 3 synthesis forwards (forward + backward w.r.t. w and noise), loss network excluded, against the
machine's peak measured in the same run. Prints readable lines, then one JSON object as the last line.

`--real N` measures quality instead, on the shipped toy generator: the first N validation real toy
images (`gsd.toy.sample(N, seed=4_000_000)`; never the test seeds) are projected `--real-batch` at a
time for each `--steps` count, from w_avg and, with `--encoder DIR` (or 'gsd:toy_encoder'), from the
encoder's w+ (hybrid inversion, encoder forward timed with it). Per setting: s/image over the batches
after the first (which compiles), mean PSNR, and the scripted annotator (`gsd.toy.annotate`) run on the
reconstructions scored against the true masks (weighted IoU over the parts, background excluded; an
image it refuses counts as all background; also reported: the same over the images it accepts).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from benchlib import best_time, measure_peak, synthesis_gmac

from gsd import projection
from gsd.io.images import to_uint8
from gsd.stylegan2.networks import Generator, channels_nvidia

VGG16_WIDTHS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def random_lpips(seed: int = 0) -> projection.LPIPS:
    """LPIPS with random weights of the real VGG16 shapes: the same cost as the real one."""
    rng = np.random.RandomState(seed)
    convs, cin, widths = [], 3, iter(VGG16_WIDTHS)
    for tap in projection.VGG16_TAPS:
        block = []
        for _ in tap:
            cout = next(widths)
            w = (rng.randn(3, 3, cin, cout) / np.sqrt(9 * cin)).astype(np.float32)
            block.append((jnp.asarray(w), jnp.zeros((cout,), jnp.float32)))
            cin = cout
        convs.append(tuple(block))
    lins = tuple(jnp.asarray(np.abs(rng.randn(b[-1][0].shape[-1])).astype(np.float32)) for b in convs)
    return projection.LPIPS(tuple(convs), lins)


# JAX reports each trace of a jitted function under this event, with the function's name: projection's programs
# start with `_init` (host loop, the default on CPU) or are `_program` (scan loop).
TRACE_EVENT = '/jax/core/compile/jaxpr_trace_duration'
PROGRAM_NAMES = ('_init', '_program')
REAL_SEED = 4_000_000  # validation real toy images (the test sets use 2_000_000 + seed)


def bench_batch(G, variables, batch: int, args, perceptual, peak: dict) -> dict:
    z = jax.random.normal(jax.random.PRNGKey(batch), (batch, G.z_dim))
    targets = to_uint8(G.apply(variables, G.apply(variables, z, method='map'), method='synthesize'))
    calls = []
    traced = []

    def listener(event, secs, fun_name=None, **_):
        if event == TRACE_EVENT and fun_name in PROGRAM_NAMES:
            traced.append(fun_name)

    def call():
        t = time.perf_counter()
        r = projection.project(G, variables, targets, steps=args.steps, space=args.space, perceptual=perceptual)
        calls.append(time.perf_counter() - t)
        return r.ws

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        run_s = best_time(call, repeats=args.repeats)  # its warm-up call is the first, compiling one
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    compile_s = max(calls[0] - run_s, 0.0)
    gflop = 3 * 2 * synthesis_gmac(G.resolution, G.channels) * batch * args.steps
    out = {
        'batch': batch,
        'first_call_s': calls[0],
        'compile_s': compile_s,
        'run_s': run_s,
        's_per_image': run_s / batch,
        'ms_per_step': 1e3 * run_s / args.steps,
        'synthesis_gflops': gflop / run_s,
        'pct_of_conv_peak': 100 * gflop / run_s / peak['conv3x3_gflops'],
        'traces': len(traced),
    }
    print(
        f'batch {batch}: compile {compile_s:.1f} s, run {run_s:.2f} s for {args.steps} steps = '
        f'{out["s_per_image"]:.3f} s/image ({out["ms_per_step"]:.1f} ms/step, '
        f'{out["synthesis_gflops"]:.0f} synthesis GFLOP/s = {out["pct_of_conv_peak"]:.0f}% of conv peak); '
        f'traces {out["traces"]}',
        flush=True,
    )
    return out


def bench_real(args) -> list:
    from gsd import segmenters, toy

    G, variables = toy.pretrained()
    images, masks = toy.sample(args.real, seed=REAL_SEED, size=G.resolution)
    encoder = segmenters.load_encoder(args.encoder, G, variables) if args.encoder else None
    plain_steps = args.steps if args.plain_steps is None else args.plain_steps
    results = [real_one(G, variables, images, masks, steps, None, 0.05, 0.1, args) for steps in plain_steps]
    for steps in args.steps if encoder else []:
        for noise_factor in args.noise_factor:
            for lr in args.lr:
                results.append(real_one(G, variables, images, masks, steps, encoder, noise_factor, lr, args))
    return results


def real_one(G, variables, images, masks, steps, enc, noise_factor, lr, args) -> dict:
    from gsd import evaluation, toy

    batch = args.real_batch
    recon, psnr, times = [], [], []
    for s in range(0, len(images), batch):
        t = time.perf_counter()
        chunk = images[s : s + batch]
        init_ws = None if enc is None else enc(chunk)
        r = projection.project(
            G,
            variables,
            chunk,
            steps=steps,
            space='w+',
            seed=s,
            init_ws=init_ws,
            initial_noise_factor=noise_factor,
            lr=lr,
        )
        times.append((time.perf_counter() - t, len(chunk)))
        recon.append(r.images)
        psnr.append(r.psnr)
    recon, psnr = np.concatenate(recon), np.concatenate(psnr)
    conf = evaluation.Confusion(len(toy.CLASSES), toy.CLASSES)
    accepted = evaluation.Confusion(len(toy.CLASSES), toy.CLASSES)  # the images the annotator reads only
    refused = 0
    for img, gt in zip(recon, masks):
        pred = toy.annotate(img)
        if pred is None:
            refused, pred = refused + 1, np.zeros_like(gt)
        else:
            accepted.update(gt, pred)
        conf.update(gt, pred)
    warm = times[1:] or times  # the first batch compiles
    out = {
        'encoder': enc is not None,
        'steps': steps,
        'lr': lr,
        'initial_noise_factor': noise_factor,
        's_per_image': sum(t for t, _ in warm) / sum(n for _, n in warm),
        'first_batch_s': times[0][0],
        'psnr': float(np.mean(psnr)),
        'weighted_iou_no_bg': conf.results()['weighted_iou_no_bg'],
        'weighted_iou_no_bg_accepted': accepted.results()['weighted_iou_no_bg'],
        'annotator_refused': refused,
    }
    print(
        f'{"encoder" if enc is not None else "w_avg  "} steps {steps:4d} lr {lr:.3f} noise {noise_factor:.2f}: '
        f'{out["s_per_image"]:.3f} s/image, PSNR {out["psnr"]:.2f} dB, annotator weighted IoU '
        f'{out["weighted_iou_no_bg"]:.1f} ({refused} refused, {out["weighted_iou_no_bg_accepted"]:.1f} over the rest)',
        flush=True,
    )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--res', type=int, default=64)
    ap.add_argument('--channel-base', type=int, default=2048)
    ap.add_argument('--channel-max', type=int, default=64)
    ap.add_argument('--z-dim', type=int, default=128)
    ap.add_argument('--w-dim', type=int, default=128)
    ap.add_argument('--n-mlp', type=int, default=4)
    ap.add_argument('--batch', type=int, nargs='+', default=[1, 8])
    ap.add_argument('--steps', type=int, nargs='+', default=[1000])
    ap.add_argument('--space', choices=projection.SPACES, default='w')
    ap.add_argument('--loss', choices=('pixel', 'lpips'), default='pixel')
    ap.add_argument('--vgg16', help="torchvision's vgg16-397923af.pth (or an .npz); random weights if absent")
    ap.add_argument('--lpips-weights', help="the lpips package's v0.1 vgg.pth")
    ap.add_argument('--repeats', type=int, default=1)
    ap.add_argument('--real', type=int, default=0, help='quality mode: this many validation real toy images')
    ap.add_argument('--real-batch', type=int, default=50)
    ap.add_argument('--encoder', default='', help="encoder directory or 'gsd:toy_encoder' (with --real)")
    ap.add_argument('--plain-steps', type=int, nargs='*', help='step counts from w_avg (default: --steps)')
    ap.add_argument('--noise-factor', type=float, nargs='+', default=[0.0], help='initial latent noise (encoder)')
    ap.add_argument('--lr', type=float, nargs='+', default=[0.1], help='projection lr (encoder runs)')
    args = ap.parse_args()
    if args.real:
        results = bench_real(args)
        print(
            json.dumps({'bench': 'projection_real', 'jax': jax.__version__, 'config': vars(args), 'results': results})
        )
        return
    if len(args.steps) != 1:
        ap.error('give one --steps value without --real')
    args.steps = args.steps[0]

    dev = jax.devices()[0]
    print(
        f'device: {dev.platform} {dev.device_kind} x{jax.device_count()}, '
        f'host {platform.processor() or platform.machine()}'
    )
    peak = measure_peak(3)
    print(f'peak: matmul {peak["matmul_gflops"]:.0f} GFLOP/s, 3x3 conv {peak["conv3x3_gflops"]:.0f} GFLOP/s')
    channels = channels_nvidia(args.res, args.channel_base, args.channel_max)
    G = Generator(args.res, channels, z_dim=args.z_dim, w_dim=args.w_dim, n_mlp=args.n_mlp)
    variables = jax.jit(G.init)(jax.random.PRNGKey(0), jnp.zeros((1, args.z_dim)))
    if args.loss == 'lpips':
        perceptual = projection.LPIPS.from_files(args.vgg16, args.lpips_weights) if args.vgg16 else random_lpips()
    else:
        perceptual = projection.PixelPyramidLoss()
    print(
        f'generator: {args.res} px, channels {channels}, z/w {args.z_dim}/{args.w_dim}, n_mlp {args.n_mlp}; '
        f'space {args.space}, loss {args.loss}, {args.steps} steps'
    )
    results = [bench_batch(G, variables, b, args, perceptual, peak) for b in args.batch]
    print(
        json.dumps(
            {
                'bench': 'projection',
                'device': f'{dev.platform}:{dev.device_kind}',
                'jax': jax.__version__,
                'config': vars(args),
                'channels': list(channels),
                'peak': peak,
                'results': results,
            }
        )
    )


if __name__ == '__main__':
    main()
