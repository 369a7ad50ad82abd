"""Auto-shot segmentation stage: every image of a folder through the trained UNet, at its own size.

    python -m gsd.main --config=configs/toy_autoshot.py --workdir=DIR \
        --config.stages=autoshot_segment --config.autoshot_segment.input=/path/to/images

No GAN and no projection: the UNet of WORKDIR/autoshot/unet (`gsd.autoshot`) segments each image
at its own size and aspect, with as many objects as it holds. Any mode is read (RGBA composited over
white, greyscale, 16-bit scaled by its bit depth, EXIF orientation applied; see gsd.data);
unreadable files are named in a warning and skipped. Images of one size are batched together (each
size compiles once). Writes WORKDIR/autoshot_segment/{stem}_mask.png (indexed PNG in the class
palette), {stem}_overlay.png and results.json (sizes, class pixel shares, skipped files with reasons).
`segment_folder` is the same as a library call.
"""

from __future__ import annotations

import json
import pathlib
import time
import warnings

import ml_collections
import numpy as np

from gsd import autoshot, data
from gsd import images as image_io


def models(config) -> dict:
    return {}


def segment_folder(segmenter: autoshot.AutoshotSegmenter, folder, out) -> dict:
    """Segment every readable image under `folder` into `out` (see module doc); returns the summary."""
    from gsd.report import overlay
    out = pathlib.Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter('always', data.UnreadableImageWarning)
        source = data.ImageFolderSource(folder, None)
        images, stems = [], []
        for i, path in enumerate(source.paths):
            try:
                images.append(source.load(i))
                stems.append(str(path.relative_to(source.root).with_suffix('')).replace('/', '__'))
            except Exception as e:   # noqa: BLE001 - a bad file is named and skipped, never stops the batch
                source.skipped.append((str(path), f'cannot decode: {type(e).__name__}: {e}'))
                warnings.warn(f'skipping image {path}: cannot decode: {type(e).__name__}: {e}',
                              data.UnreadableImageWarning)
    masks = segmenter.segment(images) if images else []
    per_image = {}
    for stem, img, mask in zip(stems, images, masks):
        mask = np.asarray(mask, np.uint8)
        image_io.write_png(out / f'{stem}_mask.png', mask, palette=segmenter.colours)
        image_io.write_png(out / f'{stem}_overlay.png', overlay(img, mask, segmenter.colours))
        share = np.bincount(mask.ravel(), minlength=len(segmenter.classes)) / mask.size
        per_image[stem] = {'size': [int(img.shape[1]), int(img.shape[0])],
                           'class_share': {c: round(float(v), 4) for c, v in zip(segmenter.classes, share)}}
    summary = {'images': per_image, 'skipped': source.skipped}
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(summary, indent=1))
    return summary


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    workdir = pathlib.Path(workdir)
    folder = config.autoshot_segment.input
    if not folder:
        raise ValueError('autoshot_segment.input: give a folder of images (--config.autoshot_segment.input=DIR)')
    t0 = time.time()
    out = workdir / 'autoshot_segment'
    summary = segment_folder(autoshot.load(workdir), folder, out)
    summary['seconds'] = round(time.time() - t0, 1)
    (out / 'results.json').write_text(json.dumps(summary, indent=1))
    print(f'autoshot_segment: {len(summary["images"])} images -> {out} ({len(summary["skipped"])} skipped, '
          f'{summary["seconds"]} s)')
    return summary
