"""Shots stage: the k generated images a person labels, written to WORKDIR/shots/ for labelling.

    shots/images/NNNNN.png      the generated images (what the labeller sees)
    shots/labels/NNNNN.png      label files: all-background palette PNGs (templates) to paint over,
                                or, in the toy world, the scripted annotator's masks
    shots/latents.npz           z, ws (the truncated w+ each image came from), candidate index
    shots/classes.json          class names and their palette colours (the legend)
    shots/shots.json            what was sampled (seed, psi, count), so a rerun can tell whether the
                                labels on disk belong to these images

A person paints each label file (any editor that keeps palette mode; or saves an RGB PNG in the
legend's colours; or one binary PNG per part as `NNNNN_<part>.png`, see `gsd.io.annotation`) and runs
the `fewshot` stage. A rerun with the same settings keeps existing labels; with other settings it
refuses rather than pair old labels with new images. Everything is written to a temporary directory
first and renamed (`gsd.io.atomic.directory`), so an interrupted run leaves no half set.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from gsd import errors
from gsd.io import annotation, atomic
from gsd.io import images as image_io
from gsd.stylegan2 import generator
from gsd.training import parallel

ANNOTATORS = ('none', 'toy')


def models(config) -> dict:
    return generator.generator_models(config.generator)


def _settings(config) -> dict:
    s = config.shots
    return {
        'seed': int(config.seed),
        'num': int(s.num),
        'truncation_psi': float(s.truncation_psi),
        'annotator': s.annotator,
        'generator': generator.identity(config.generator),
    }


def check(config) -> None:
    """Refuse settings sampling cannot run with, before any stage of the run starts."""
    cfg = config.shots
    if cfg.annotator not in ANNOTATORS:
        raise errors.SettingError(f'shots.annotator: must be one of {ANNOTATORS}, got {cfg.annotator!r}')
    for field in ('num', 'batch_size', 'max_candidates'):
        if not (isinstance(cfg[field], int) and not isinstance(cfg[field], bool) and cfg[field] >= 1):
            raise errors.SettingError(f'shots.{field}: must be an integer >= 1, got {cfg[field]!r}')
    if cfg.max_candidates < cfg.num:
        raise errors.SettingError(
            f'shots.max_candidates: {cfg.max_candidates} candidates cannot give shots.num = {cfg.num} shots'
        )
    palette(config)


def palette(config) -> np.ndarray:
    """The class colours of a config (checked against its class names)."""
    return annotation.palette(config.classes.names, config.classes.colours)


def _candidates(module, variables, seed: int, psi: float, batch: int):
    """Endless (index, z, ws, image uint8) stream: candidate i is a pure function of (seed, i)."""
    gen = jax.jit(lambda v, z: generator.ws_and_images(module, v, z, psi))
    base = jax.random.PRNGKey(seed)
    start = 0
    while True:
        idx = np.arange(start, start + batch)
        z = generator.latents(base, jnp.asarray(idx), module.z_dim)
        ws, imgs = gen(variables, z)
        for i, zi, wi, im in zip(idx, np.asarray(z), np.asarray(ws), image_io.to_uint8(imgs)):
            yield int(i), zi, wi, im
        start += batch


def _write(out: pathlib.Path, kept, colours, config, summary: dict) -> None:
    # Only a set without shots.json (an unfinished earlier write) can be replaced here.
    with atomic.directory(out) as tmp:
        for k, (_, _, _, img, mask) in enumerate(kept):
            image_io.write_png(tmp / 'images' / f'{k:05d}.png', img)
            if mask is not None:
                image_io.write_png(tmp / 'labels' / f'{k:05d}.png', mask.astype(np.uint8), palette=colours)
            else:
                annotation.write_label_template(tmp / 'labels' / f'{k:05d}.png', img, colours)
        np.savez(
            tmp / 'latents.npz',
            candidate=np.array([c[0] for c in kept]),
            z=np.stack([c[1] for c in kept]),
            ws=np.stack([c[2] for c in kept]),
        )
        annotation.write_colour_legend(tmp / 'classes.json', list(config.classes.names), colours)
        (tmp / 'shots.json').write_text(json.dumps(summary, indent=1))


def run(config: ml_collections.ConfigDict, workdir) -> dict:
    """Sample `config.shots.num` images (and, with the toy annotator, label them); see module doc."""
    check(config)
    cfg = config.shots
    out = pathlib.Path(workdir) / 'shots'
    settings = _settings(config)
    record = out / 'shots.json'
    if record.exists():
        before = json.loads(record.read_text())
        if before.get('settings') != settings:
            raise ValueError(
                f'{out}: holds shots sampled with {before.get("settings")}, not {settings}; '
                f'use a new workdir (its labels belong to those images)'
            )
        print(f'shots: {out} already holds these {cfg.num} shots; kept')
        return before

    module, variables = generator.build_generator(config.generator)
    colours = palette(config)
    toy_labels = cfg.annotator == 'toy'
    if toy_labels:
        from gsd.toy import annotator as toy_annotate
    kept, refused = [], {}
    for i, z, ws, img in _candidates(module, variables, config.seed, cfg.truncation_psi, cfg.batch_size):
        if len(kept) == cfg.num:
            break
        if i >= cfg.max_candidates:
            raise errors.SettingError(
                f'shots.max_candidates: only {len(kept)} of {cfg.num} samples were labelled after '
                f'{cfg.max_candidates} candidates (refusals: {refused}); raise it, or lower shots.truncation_psi'
            )
        mask = None
        if toy_labels:
            mask, reason = toy_annotate.read(img)
            if mask is None:  # a careful labeller skips a sample they cannot read
                refused[reason] = refused.get(reason, 0) + 1
                continue
        kept.append((i, z, ws, img, mask))

    summary = {
        'settings': settings,
        'num': len(kept),
        'candidates_seen': int(kept[-1][0]) + 1 if kept else 0,
        'refused': refused,
        'labelled_by': 'gsd.toy.annotator' if toy_labels else 'you: paint labels/',
    }
    if parallel.is_writer():  # every process sampled the same shots (a function of the seed); one writes them
        _write(out, kept, colours, config, summary)
    how = (
        'labelled by the toy annotator'
        if toy_labels
        else f'paint {out / "labels"}/*.png (palette in classes.json), then run the fewshot stage'
    )
    print(f'shots: {len(kept)} images in {out / "images"}; {how}')
    return summary
