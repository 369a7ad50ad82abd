"""Segment stage: real images -> projection into the GAN -> features -> trained head -> part masks.

    python -m gsd.main --config=configs/toy_1shot.py --workdir=/tmp/toy_1shot \
        --config.stages=segment --config.segment.input=/path/to/images

Every image under `segment.input` (any mode and size; centre-cropped and resized to the generator's
resolution, as the GAN saw its training data) is projected (`gsd.projection`, `config.projection`),
and the projected w+ and noise go through the generator and the heads of WORKDIR/heads. Writes, per
image stem, WORKDIR/segment/{stem}_mask.png (indexed PNG, class palette), {stem}_overlay.png and
{stem}_projection.png (the GAN's reconstruction: a poor one means an unreliable mask), and
WORKDIR/segment/results.json (PSNR per image, skipped files with reasons). Unreadable files are
named in a warning and skipped. `segment_images` is the same as a library call.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import data, fewshot, projection, shots
from gsd import images as image_io


def models(config) -> dict:
    return {}


@dataclasses.dataclass
class Segmentation:
    masks: np.ndarray          # (N, S, S) uint8 class ids
    probabilities: np.ndarray  # (N, S, S, K) float32
    projections: np.ndarray    # (N, H, W, 3) uint8, the generator's reconstruction
    psnr: np.ndarray           # (N,) dB, projection vs input
    ws: np.ndarray             # (N, num_ws, w_dim)


def segment_images(segmenter: fewshot.Segmenter, images_uint8: np.ndarray, pcfg: ml_collections.ConfigDict,
                   seed: int = 0) -> Segmentation:
    """Project `images_uint8` (N, R, R, 3) at the generator's resolution, then segment them."""
    perceptual = projection.make_perceptual(pcfg.loss, pcfg.get('vgg16_path') or None, pcfg.get('lpips_path') or None)
    probs, projected, psnr, ws = [], [], [], []
    n = images_uint8.shape[0]
    for s in range(0, n, pcfg.batch_size):     # one compiled program per chunk shape (the last may be shorter)
        res = projection.project(segmenter.module, segmenter.variables, images_uint8[s:s + pcfg.batch_size],
                                 steps=pcfg.steps, lr=pcfg.lr, space=pcfg.space,
                                 optimize_noise=pcfg.optimize_noise, perceptual=perceptual, seed=seed + s)
        _, p, _ = segmenter(jnp.asarray(res.ws), jax.tree.map(jnp.asarray, res.noise))
        probs.append(np.asarray(p))
        projected.append(res.images)
        psnr.append(np.asarray(res.psnr))
        ws.append(np.asarray(res.ws))
    probs = np.concatenate(probs)
    return Segmentation(np.argmax(probs, -1).astype(np.uint8), probs, np.concatenate(projected),
                        np.concatenate(psnr), np.concatenate(ws))


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    from gsd.report import overlay
    workdir = pathlib.Path(workdir)
    cfg = config.segment
    if not cfg.input:
        raise ValueError('segment.input: give a folder of images (--config.segment.input=DIR)')
    t0 = time.time()
    seg = fewshot.load(workdir, config)
    with warnings.catch_warnings():
        warnings.simplefilter('always', data.UnreadableImageWarning)
        source = data.ImageFolderSource(cfg.input, seg.module.resolution)
    imgs, stems = [], []
    for i, path in enumerate(source.paths):
        try:
            imgs.append(source.load(i))
            stems.append(path.stem)
        except Exception as e:   # noqa: BLE001 - a bad file is named and skipped, never stops the batch
            warnings.warn(f'skipping image {path}: cannot decode: {type(e).__name__}: {e}', data.UnreadableImageWarning)
            source.skipped.append((str(path), f'cannot decode: {e}'))
    out = workdir / 'segment'
    colours = shots.palette(config)
    result = segment_images(seg, np.stack(imgs), config.projection, seed=config.seed)
    for stem, img, mask, proj in zip(stems, imgs, result.masks, result.projections):
        image_io.write_png(out / f'{stem}_mask.png', mask, palette=colours)
        image_io.write_png(out / f'{stem}_overlay.png', overlay(img, mask, colours))
        image_io.write_png(out / f'{stem}_projection.png', proj)
    summary = {'images': len(stems), 'psnr': {s: round(float(p), 2) for s, p in zip(stems, result.psnr)},
               'skipped': source.skipped, 'seconds': round(time.time() - t0, 1)}
    (out / 'results.json').write_text(json.dumps(summary, indent=1))
    print(f'segment: {len(stems)} images -> {out} (mean projection PSNR {np.mean(result.psnr):.1f} dB, '
          f'{len(source.skipped)} skipped, {summary["seconds"]} s)')
    return summary
