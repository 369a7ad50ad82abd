"""Segment stage: real images -> projection into the GAN -> features -> trained head -> part masks.

    python -m gsd.main --config=configs/toy_1shot.py --workdir=/tmp/toy_1shot \
        --config.stages=segment --config.segment.input=/path/to/images

Every image under `segment.input` (any mode and size; centre-cropped and resized to the generator's
resolution, as the GAN saw its training data) is projected (`gsd.projection`, `config.projection`),
and the projected w+ and noise go through the generator and the heads of WORKDIR/heads. Writes, per
image, WORKDIR/segment/{name}_mask.png (indexed PNG, class palette), {name}_overlay.png and
{name}_projection.png (the GAN's reconstruction: a poor one means an unreliable mask), where name is
the image's path under the input folder without its suffix (kept where two files differ only by it:
`x_png`, `x_jpg`), and WORKDIR/segment/results.json (PSNR per image, skipped files with reasons).
The folder is replaced whole, so a rerun on another folder leaves no stale masks. Unreadable files
are named in a warning and skipped. `gsd.segmenters.segment_images` is the same as a library call.
"""

from __future__ import annotations

import pathlib
import time

import ml_collections
import numpy as np

from gsd import errors, pipeline, segmenters
from gsd.io import annotation, atomic, sources
from gsd.io import images as image_io
from gsd.stylegan2 import generator
from gsd.training import parallel


def models(config) -> dict:
    return {}


def check(config) -> None:
    """The input folder must be given and be there before any stage of the run starts."""
    errors.input_folder(config.segment.input, 'segment.input')
    p = config.projection
    for field in ('steps', 'batch_size'):
        if not (isinstance(p[field], int) and not isinstance(p[field], bool) and p[field] >= 1):
            raise errors.SettingError(f'projection.{field}: must be an integer >= 1, got {p[field]!r}')


def _write(out, names, imgs, result, colours, summary: dict) -> None:
    with atomic.directory(out) as tmp:  # a rerun on another folder leaves none of the old masks behind
        for name, img, mask, proj in zip(names, imgs, result.masks, result.projections):
            image_io.write_png(tmp / f'{name}_mask.png', mask, palette=colours)
            image_io.write_png(tmp / f'{name}_overlay.png', image_io.overlay(img, mask, colours))
            image_io.write_png(tmp / f'{name}_projection.png', proj)
        atomic.write_json(tmp / 'results.json', summary)


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    check(config)
    folder = errors.input_folder(config.segment.input, 'segment.input')
    t0 = time.time()
    colours = annotation.palette(config.classes.names, config.classes.colours)
    module, variables = generator.build_generator(config.generator)
    seg = segmenters.load_heads(workdir / 'heads', module, variables)
    imgs, paths, skipped = sources.read_folder(folder, module.resolution)
    names = sources.output_names(paths)
    result = segmenters.segment_images(
        seg, np.stack(imgs), seed=config.seed, **pipeline.projection_settings(config.projection)
    )
    out = workdir / 'segment'
    summary = {
        'images': len(names),
        'psnr': {str(p): round(float(v), 2) for p, v in zip(paths, result.psnr)},
        'outputs': {str(p): n for p, n in zip(paths, names)},
        'skipped': skipped,
        'seconds': round(time.time() - t0, 1),
    }
    if parallel.is_writer():  # the projections were split over the processes and gathered; one writes
        _write(out, names, imgs, result, colours, summary)
    print(
        f'segment: {len(names)} images -> {out} (mean projection PSNR {np.mean(result.psnr):.1f} dB, '
        f'{len(skipped)} skipped, {summary["seconds"]} s)'
    )
    return summary
