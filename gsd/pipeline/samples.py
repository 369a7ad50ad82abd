"""Sampling stage: draw images from a generator and write them as a PNG grid plus their latents."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from gsd.io import images as image_io
from gsd.stylegan2 import generator
from gsd.training import parallel


def models(config) -> dict:
    """{name: (module, example_args)} this stage builds, for shape checks without running it."""
    return generator.generator_models(config.generator)


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Write WORKDIR/samples/grid.png and WORKDIR/samples/latents.npz (z, ws) for `config.samples`."""
    workdir = pathlib.Path(workdir)
    out = workdir / 'samples'
    t0 = time.time()
    module, variables = generator.build_generator(config.generator)
    cfg = config.samples
    z = jax.random.normal(jax.random.PRNGKey(config.seed), (cfg.num, module.z_dim))
    generate = jax.jit(lambda v, z: generator.ws_and_images(module, v, z, cfg.truncation_psi))
    # Fixed batch shape: one compile for any number of samples.
    ws, imgs = parallel.map_padded(lambda zb: generate(variables, zb), (z,), cfg.batch_size)
    imgs = image_io.to_uint8(imgs)
    grid_path = image_io.write_png(out / 'grid.png', image_io.grid(imgs))
    np.savez(out / 'latents.npz', z=np.asarray(z), ws=ws)
    summary = {
        'num': cfg.num,
        'resolution': int(imgs.shape[1]),
        'truncation_psi': cfg.truncation_psi,
        'seconds': round(time.time() - t0, 2),
        'grid': str(grid_path),
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=1))
    print(f'samples: wrote {cfg.num} images to {grid_path} in {summary["seconds"]} s')
    return summary
