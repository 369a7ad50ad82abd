"""Install a trained toy generator as the one gsd ships, and draw README's sample figure.

    python tools/ship_toy_generator.py /tmp/toy_gan/generator      # WORKDIR/generator of configs/toy_gan.py

Copies the generator (gsd's StyleGAN2 directory, EMA weights) to gsd/toy/assets/toy_generator/ (refusing
more than 25 MB), checks that `gsd.toy.pretrained()` loads it and generates finite images, and writes
docs/toy_samples.png: 64 samples (truncation 0.7, seed 0) beside 64 real toy images. Quality figures
come from tools/toy_quality.py.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

import jax
import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
MAX_BYTES = 25 * 2**20


def directory_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('generator', type=pathlib.Path)
    ap.add_argument('--psi', type=float, default=0.7)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from gsd import stylegan2, toy
    from gsd.io import images as image_io

    stylegan2.load(args.generator)  # refuses anything that is not a readable generator
    size = directory_bytes(args.generator)
    if size > MAX_BYTES:
        raise SystemExit(f'{args.generator}: {size / 2**20:.1f} MB, over the 25 MB the package may ship')
    dest = toy.PRETRAINED_DIR
    tmp = dest.with_name(dest.name + '.new')
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(args.generator, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)

    module, variables = toy.pretrained()
    z = jax.random.normal(jax.random.PRNGKey(0), (64, module.z_dim))
    fake = image_io.to_uint8(jax.jit(lambda v, z: module.apply(v, z, truncation_psi=args.psi))(variables, z))
    if not np.isfinite(fake).all():
        raise SystemExit('the shipped generator produced non-finite images')
    real, _ = toy.sample(64, seed=0, size=module.resolution)
    left, right = image_io.grid(fake, cols=8), image_io.grid(real, cols=8)
    gap = np.full((left.shape[0], 12, 3), 255, np.uint8)
    figure = image_io.write_png(REPO / 'docs' / 'toy_samples.png', np.concatenate([left, gap, right], axis=1))
    print(f'shipped {dest} ({size / 2**20:.2f} MB); figure {figure} (left: generated, psi {args.psi}; right: real)')


if __name__ == '__main__':
    main()
