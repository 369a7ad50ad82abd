"""Measure a toy-world generator: does the scripted annotator accept its samples, with real class shares?

    python tools/toy_quality.py /tmp/toy_gan/generator              # any path gsd.stylegan2.load reads
    python tools/toy_quality.py /tmp/toy_gan/generator --num 1000 --psi 0.7

Samples `--num` images (seed 0, truncation psi), runs `gsd.toy.annotate` on each, and compares each
class's pixel share over the accepted annotations with its share over as many real toy images
(ground-truth masks, `gsd.toy.sample`). Targets (issue 3): acceptance >= 90%, every class's share
within 20% (relative) of the real one. Also reports the refusal reasons. Prints readable lines, then
one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np

from gsd import images as image_io
from gsd import stylegan2, toy, toy_annotate


def generated_images(path, num: int, psi: float, seed: int, batch: int = 50) -> np.ndarray:
    g, variables = stylegan2.load(path)
    z = jax.random.normal(jax.random.PRNGKey(seed), (num, g.z_dim))
    generate = jax.jit(lambda v, z: g.apply(v, z, truncation_psi=psi, noise_mode='const'))
    out = []
    for start in range(0, num, batch):
        zb = z[start:start + batch]
        n = zb.shape[0]
        out.append(image_io.to_uint8(generate(variables, jnp.pad(zb, ((0, batch - n), (0, 0)))))[:n])
    return np.concatenate(out)


def class_shares(masks) -> np.ndarray:
    counts = np.zeros(len(toy.CLASSES))
    for m in masks:
        counts += np.bincount(m.reshape(-1), minlength=len(toy.CLASSES))
    return counts / counts.sum()


def measure(path, num: int = 1000, psi: float = 0.7, seed: int = 0) -> dict:
    images = generated_images(path, num, psi, seed)
    accepted, reasons = [], collections.Counter()
    for img in images:
        mask, reason = toy_annotate.read(img)
        if mask is None:
            reasons[reason] += 1
        else:
            accepted.append(mask)
    _, real_masks = toy.sample(num, seed=seed, size=images.shape[1])
    real, gen = class_shares(real_masks), class_shares(accepted) if accepted else np.zeros(len(toy.CLASSES))
    rel = {c: float(gen[i] / real[i] - 1) for i, c in enumerate(toy.CLASSES)}
    return {'generator': str(path), 'num': num, 'psi': psi, 'acceptance': len(accepted) / num,
            'refusals': dict(reasons.most_common()),
            'share_generated': dict(zip(toy.CLASSES, gen.tolist())), 'share_real': dict(zip(toy.CLASSES, real.tolist())),
            'share_relative_error': rel,
            'meets_targets': len(accepted) / num >= 0.9 and all(abs(v) <= 0.2 for v in rel.values())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('generator')
    ap.add_argument('--num', type=int, default=1000)
    ap.add_argument('--psi', type=float, default=0.7)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    r = measure(args.generator, args.num, args.psi, args.seed)
    print(f"annotator acceptance: {r['acceptance']:.1%} of {r['num']} samples at psi {r['psi']} (target >= 90%)")
    if r['refusals']:
        print('refusals: ' + ', '.join(f'{k}: {v}' for k, v in r['refusals'].items()))
    print(f"{'class':<12}{'generated':>10}{'real':>10}{'rel. err':>10}")
    for c in toy.CLASSES:
        print(f"{c:<12}{r['share_generated'][c]:>10.4f}{r['share_real'][c]:>10.4f}{r['share_relative_error'][c]:>+10.1%}")
    print(f"meets targets: {r['meets_targets']}")
    print(json.dumps(r))
    return 0


if __name__ == '__main__':
    sys.exit(main())
