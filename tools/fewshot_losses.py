"""Where the one-shot pipeline loses, stage by stage, for the heads a toy run trained (WORKDIR/heads).

    python tools/fewshot_losses.py --workdir=/tmp/toy_1shot [--num 100] [--steps 200] [--encoder gsd:toy_encoder]

Scores the same heads four ways (IoU in percent; mean IoU over all classes, weighted IoU over the parts):

  1. generated: generated images (truncation --psi) labelled by the scripted toy annotator (the samples it
     refuses are skipped), the heads on the generator's own features: the head alone;
  2. generated, reconstructed: the same images projected back into the GAN and segmented from the
     reconstruction's features: what projection costs when the image is one the GAN can make exactly;
  3. real, reconstructed: real toy images (`gsd.toy.sample(num, seed=--real-seed)`, validation images by
     default, never the report's test seeds) projected and segmented, against their true masks: the
     `fewshot` method itself;
  4. the annotator on those reconstructions, against the true masks: the ceiling projection leaves to any
     labeller that reads the reconstruction alone (a head with image channels reads the photo as well).

Prints one line per row, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import evaluation, projection, segmenters, toy
from gsd.io import images as image_io
from gsd.stylegan2 import generator
from gsd.toy import annotator

VALIDATION_IMAGES_SEED = 4_000_000


def _score(gt, pred) -> dict:
    conf = evaluation.Confusion(len(toy.CLASSES), toy.CLASSES)
    conf.update(np.asarray(gt), np.asarray(pred))
    r = conf.results(background=0)
    return {
        'mean_iou': r['mean_iou'],
        'weighted_iou': r['weighted_iou_no_bg'],
        'per_class_iou': r['per_class_iou'],
    }


def _generated(module, variables, num: int, psi: float, seed: int):
    """Generated images the annotator accepts, with its labels, their w+ and a count of the refused ones."""
    run = jax.jit(lambda v, z: generator.ws_and_images(module, v, z, psi))
    ws, imgs, labels, refused = [], [], [], 0
    index = 0
    while len(imgs) < num and index < 4 * num:
        z = generator.latents(jax.random.PRNGKey(seed), jnp.arange(index, index + 50), module.z_dim)
        w, im = run(variables, z)
        for wi, ii in zip(np.asarray(w), image_io.to_uint8(im)):
            mask, _ = annotator.read(ii)
            if mask is None:
                refused += 1
            elif len(imgs) < num:
                ws.append(wi), imgs.append(ii), labels.append(mask)
        index += 50
    return np.stack(ws), np.stack(imgs), np.stack(labels), refused


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--workdir', required=True, help='a run whose heads/ to score (a toy config)')
    ap.add_argument('--checkpoint', default='gsd:toy', help='the generator the heads were trained on')
    ap.add_argument('--num', type=int, default=100)
    ap.add_argument('--psi', type=float, default=0.7, help='truncation of the generated images (the shots use 0.7)')
    ap.add_argument('--seed', type=int, default=123, help='generated images: latents from this key')
    ap.add_argument('--real-seed', type=int, default=VALIDATION_IMAGES_SEED)
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--batch', type=int, default=50)
    ap.add_argument('--encoder', default='', help="projection.encoder: '' (none), a directory or 'gsd:toy_encoder'")
    args = ap.parse_args()

    gen_cfg = ml_collections.ConfigDict({'checkpoint': args.checkpoint, 'which': 'G_ema'})
    module, variables = generator.build_generator(gen_cfg)
    seg = segmenters.load_heads(pathlib.Path(args.workdir) / 'heads', module, variables)
    project = dict(batch_size=args.batch, steps=args.steps, space='w+', perceptual=projection.PixelPyramidLoss())
    if args.encoder:
        project['encoder'] = args.encoder
    rows = {}

    t0 = time.time()
    ws, imgs, labels, refused = _generated(module, variables, args.num, args.psi, args.seed)
    _, probs, _ = seg(jnp.asarray(ws))
    rows['1 generated'] = _score(labels, np.argmax(np.asarray(probs), -1))
    rows['2 generated, reconstructed'] = _score(labels, segmenters.segment_images(seg, imgs, seed=1, **project).masks)
    real, truth = toy.sample(args.num, seed=args.real_seed, size=module.resolution)
    result = segmenters.segment_images(seg, real, seed=2, **project)
    rows['3 real, reconstructed'] = _score(truth, result.masks)
    read = [annotator.read(im)[0] for im in result.projections]
    kept = [i for i, m in enumerate(read) if m is not None]
    rows['4 annotator on real reconstructions'] = {
        **_score(truth[kept], np.stack([read[i] for i in kept])),
        'refused': len(read) - len(kept),
    }
    for name, r in rows.items():
        classes = ' '.join(f'{k} {v:.1f}' for k, v in r['per_class_iou'].items())
        print(f'{name:38s} mean IoU {r["mean_iou"]:5.1f}  weighted (parts) {r["weighted_iou"]:5.1f}  | {classes}')
    out = {
        'workdir': args.workdir,
        'num': args.num,
        'generated_refused': refused,
        'steps': args.steps,
        'encoder': args.encoder,
        'psnr_real': float(np.mean(result.psnr)),
        'seconds': round(time.time() - t0, 1),
        'rows': rows,
    }
    print(json.dumps(out))


if __name__ == '__main__':
    main()
