"""Auto-shot segmentation stage: every image of a folder through the trained UNet, at its own size.

    python -m gsd.main --config=configs/toy_autoshot.py --workdir=DIR \
        --config.stages=autoshot_segment --config.autoshot_segment.input=/path/to/images

No GAN and no projection: the UNet of WORKDIR/autoshot/unet (`gsd.pipeline.autoshot`) segments each image
at its own size and aspect, with as many objects as it holds. Any mode is read (RGBA composited over
white, greyscale, 16-bit scaled by its bit depth, EXIF orientation applied; see gsd.io.sources);
unreadable files are named in a warning and skipped. Images of one size are batched together (each
size compiles once). Writes WORKDIR/autoshot_segment/{name}_mask.png (indexed PNG in the class
palette; name: the image's path under the folder without its suffix, kept where two files differ
only by it), {name}_overlay.png and results.json (sizes, class pixel shares, skipped files with
reasons). The folder is replaced whole, so a rerun on another folder leaves no stale masks.
`segment_folder` is the same as a library call.
"""

from __future__ import annotations

import pathlib
import time

import ml_collections
import numpy as np

from gsd import errors, segmenters
from gsd.io import atomic, sources
from gsd.io import images as image_io
from gsd.training import parallel


def models(config) -> dict:
    return {}


def check(config) -> None:
    """The input folder must be given and be there before any stage of the run starts."""
    errors.input_folder(config.autoshot_segment.input, 'autoshot_segment.input')


def segment_folder(segmenter: segmenters.UNetSegmenter, folder, out) -> dict:
    """Segment every readable image under `folder` into `out` (replaced whole; see module doc); returns the
    summary."""
    images, paths, skipped = sources.read_folder(folder, None)
    names = sources.output_names(paths)
    # Every process segments the whole folder (images of any size do not stack for a gather; the UNet is
    # fast beside a GAN projection) and process 0 writes the masks.
    masks = [np.asarray(m, np.uint8) for m in segmenter.segment(images)]
    per_image = {}
    for path, name, img, mask in zip(paths, names, images, masks):
        share = np.bincount(mask.ravel(), minlength=len(segmenter.classes)) / mask.size
        per_image[str(path)] = {
            'output': name,
            'size': [int(img.shape[1]), int(img.shape[0])],
            'class_share': {c: round(float(v), 4) for c, v in zip(segmenter.classes, share)},
        }
    summary = {'images': per_image, 'skipped': skipped}
    if parallel.is_writer():
        with atomic.directory(out) as tmp:  # a rerun on another folder leaves none of the old masks behind
            for name, img, mask in zip(names, images, masks):
                image_io.write_png(tmp / f'{name}_mask.png', mask, palette=segmenter.colours)
                image_io.write_png(tmp / f'{name}_overlay.png', image_io.overlay(img, mask, segmenter.colours))
            atomic.write_json(tmp / 'results.json', summary)
    return summary


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    folder = errors.input_folder(config.autoshot_segment.input, 'autoshot_segment.input')
    t0 = time.time()
    out = workdir / 'autoshot_segment'
    summary = segment_folder(segmenters.load_unet(workdir / 'autoshot' / 'unet'), folder, out)
    summary['seconds'] = round(time.time() - t0, 1)
    if parallel.is_writer():
        atomic.write_json(out / 'results.json', summary)
    print(
        f'autoshot_segment: {len(summary["images"])} images -> {out} ({len(summary["skipped"])} skipped, '
        f'{summary["seconds"]} s)'
    )
    return summary
