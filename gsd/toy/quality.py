"""A toy-world generator's quality: does the scripted annotator accept its samples, with real class shares?

`measure` samples images (seed, truncation psi), runs `gsd.toy.annotator` on each, and compares each
class's pixel share over the accepted annotations with its share over as many real toy images
(ground-truth masks, `gsd.toy.sample`). Targets: acceptance >= 90%, every class's share within 20%
(relative) of the real one. `tools/toy_quality.py` is its command line.
"""

from __future__ import annotations

import collections

import jax
import numpy as np

from gsd import stylegan2
from gsd.io import images as image_io
from gsd.toy import annotator, world
from gsd.training import parallel


def generated_images(path, num: int, psi: float, seed: int, batch: int = 50) -> np.ndarray:
    g, variables = stylegan2.load(path)
    z = jax.random.normal(jax.random.PRNGKey(seed), (num, g.z_dim))
    generate = jax.jit(lambda v, z: g.apply(v, z, truncation_psi=psi, noise_mode='const'))
    return image_io.to_uint8(parallel.map_padded(lambda zb: generate(variables, zb), [np.asarray(z)], batch))


def class_shares(masks) -> np.ndarray:
    counts = np.zeros(len(world.CLASSES))
    for m in masks:
        counts += np.bincount(m.reshape(-1), minlength=len(world.CLASSES))
    return counts / counts.sum()


def measure(path, num: int = 1000, psi: float = 0.7, seed: int = 0) -> dict:
    images = generated_images(path, num, psi, seed)
    accepted, reasons = [], collections.Counter()
    for img in images:
        mask, reason = annotator.read(img)
        if mask is None:
            reasons[reason] += 1
        else:
            accepted.append(mask)
    _, real_masks = world.sample(num, seed=seed, size=images.shape[1])
    real, gen = class_shares(real_masks), class_shares(accepted) if accepted else np.zeros(len(world.CLASSES))
    rel = {c: float(gen[i] / real[i] - 1) for i, c in enumerate(world.CLASSES)}
    return {
        'generator': str(path),
        'num': num,
        'psi': psi,
        'acceptance': len(accepted) / num,
        'refusals': dict(reasons.most_common()),
        'share_generated': dict(zip(world.CLASSES, gen.tolist())),
        'share_real': dict(zip(world.CLASSES, real.tolist())),
        'share_relative_error': rel,
        'meets_targets': len(accepted) / num >= 0.9 and all(abs(v) <= 0.2 for v in rel.values()),
    }
