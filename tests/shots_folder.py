"""A shots folder as the `shots` stage writes it (images, label templates, latents, shots.json), made from toy
world faces with no generator, for the annotator's tests."""

from __future__ import annotations

import json
import pathlib

import numpy as np

from gsd import toy
from gsd.io import annotation
from gsd.io import images as image_io

PALETTE = annotation.palette(toy.CLASSES, toy.PALETTE)


def write(workdir, num: int = 3, size: int = 32, seed: int = 5, labelled=()) -> tuple[np.ndarray, np.ndarray]:
    """WORKDIR/shots with `num` toy faces of `size` px: label templates, except the shots in `labelled`, which
    get their true masks; returns (images (num, size, size, 3) uint8, true masks (num, size, size))."""
    root = pathlib.Path(workdir) / 'shots'
    imgs, masks = toy.sample(num, seed=seed, size=size)
    for k in range(num):
        image_io.write_png(root / 'images' / f'{k:05d}.png', imgs[k])
        if k in labelled:
            image_io.write_png(root / 'labels' / f'{k:05d}.png', masks[k].astype(np.uint8), palette=PALETTE)
        else:
            annotation.write_label_template(root / 'labels' / f'{k:05d}.png', imgs[k], PALETTE)
    np.savez(root / 'latents.npz', z=np.zeros((num, 4)), ws=np.zeros((num, 2, 4), np.float32), candidate=np.arange(num))
    (root / 'shots.json').write_text(json.dumps({'settings': {}, 'num': num, 'labelled_by': 'tests'}))
    return imgs, masks
