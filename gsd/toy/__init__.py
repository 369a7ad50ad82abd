"""The toy world: procedural cartoon faces with exact part masks (`world`), a scripted annotator for
generated faces (`annotator`), the world as a TFDS dataset (`dataset`) and a StyleGAN2 trained on it,
shipped in `assets/` (`pretrained`)."""

from __future__ import annotations

import pathlib

from gsd.toy.annotator import annotate
from gsd.toy.world import (
    BACKGROUND,
    CLASSES,
    HAIR,
    LEFT_EYE,
    MOUTH,
    NOSE,
    PALETTE,
    RIGHT_EYE,
    SKIN,
    FaceParams,
    composite,
    random_params,
    render,
    sample,
    write_image_folder,
)

PRETRAINED_DIR = pathlib.Path(__file__).parent / 'assets' / 'toy_generator'


def pretrained(dtype=None):
    """(module, variables) of the toy generator shipped with gsd (64 px StyleGAN2 trained by
    configs/toy_gan.py; its docstring records the command, time and quality). Usable anywhere a
    loaded checkpoint is, e.g. `generator.checkpoint = 'gsd:toy'` in a config."""
    import ml_collections

    from gsd.stylegan2 import generator  # imported here: the renderer itself needs no JAX

    return generator.build_generator(ml_collections.ConfigDict({'checkpoint': generator.TOY_CHECKPOINT}), dtype)


__all__ = [
    'BACKGROUND',
    'CLASSES',
    'HAIR',
    'LEFT_EYE',
    'MOUTH',
    'NOSE',
    'PALETTE',
    'PRETRAINED_DIR',
    'RIGHT_EYE',
    'SKIN',
    'FaceParams',
    'annotate',
    'composite',
    'pretrained',
    'random_params',
    'render',
    'sample',
    'write_image_folder',
]
