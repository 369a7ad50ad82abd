"""What the training stages produce, loaded for use: the GAN with its few-shot heads, and the auto-shot UNet.

`GANSegmenter` maps w+ (and noise) to part probabilities through the generator and an ensemble of heads;
`segment_images` projects real images into the GAN first. `UNetSegmenter` segments images of any size
with no GAN. `load_heads` / `load_unet` read them from the directories the `fewshot` and `autoshot`
stages write (WORKDIR/heads, WORKDIR/autoshot/unet).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gsd import errors, features, projection
from gsd.io import param_store, sources
from gsd.nn import heads, unet

HEAD_KINDS = ('cnn', 'mlp')
UNET_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def make_head(kind: str, num_classes: int, layout: features.FeatureLayout):
    """The paper's CNN or MLP head with its first layer fused over the layout's layers."""
    if kind == 'cnn':
        return heads.CNNHead(num_classes, in_features=layout.channels, first_layer_fused=True, layout=layout)
    if kind == 'mlp':
        return heads.MLPHead(num_classes, in_features=layout.channels, first_layer_fused=True, layout=layout)
    raise errors.SettingError(f'fewshot.head: must be one of {HEAD_KINDS}, got {kind!r}')


@dataclasses.dataclass(eq=False)
class GANSegmenter:
    """Generator + trained heads: w+ -> per-pixel class probabilities (ensemble mean)."""

    module: Any
    variables: Any
    extractor: features.FeatureExtractor
    head: Any
    params: Any  # stacked along a leading member axis
    classes: tuple[str, ...]

    def __post_init__(self):
        self._probs = jax.jit(self._probabilities, static_argnames='noise_mode')

    def member_logits(self, params, variables, ws, noise=None, noise_mode: str = 'const'):
        """(images raw (N, H, W, 3), every member's logits (M, N, S, S, K)); traceable, for callers' programs."""
        images, acts = self.extractor.traced_images_and_activations(variables, ws, noise, None, noise_mode)
        return images, heads.ensemble_logits(self.head, params, acts)

    def _probabilities(self, params, variables, ws, noise, noise_mode):
        images, logits = self.member_logits(params, variables, ws, noise, noise_mode)
        return images, jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), jnp.mean(logits, axis=0)

    def __call__(self, ws, noise=None, noise_mode: str = 'const'):
        """(images raw (N, H, W, 3), probabilities (N, S, S, K), mean logits (N, S, S, K))."""
        return self._probs(self.params, self.variables, ws, noise, noise_mode=noise_mode)


def read_heads_meta(heads_dir) -> dict:
    """heads.json of a `fewshot` output directory (WORKDIR/heads)."""
    path = pathlib.Path(heads_dir) / 'heads.json'
    if not path.exists():
        raise errors.MissingInputError(f'{path.parent}: no trained heads here; run the fewshot stage first')
    return _read_json(path)


def _read_json(path: pathlib.Path):
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise errors.BadFileError(f'{path}: damaged ({e}); run the stage that wrote it again') from None


def load_heads(heads_dir, module, variables) -> GANSegmenter:
    """The GANSegmenter of the heads in `heads_dir` (WORKDIR/heads) on the generator (module, variables)."""
    meta = read_heads_meta(heads_dir)
    ext = features.FeatureExtractor(
        module, meta['feature_size'], meta['layers'], meta['upsample'], meta['align_corners']
    )
    head = make_head(meta['head'], len(meta['classes']), ext.layout)
    return GANSegmenter(module, variables, ext, head, param_store.read_params(heads_dir), tuple(meta['classes']))


@dataclasses.dataclass
class Segmentation:
    masks: np.ndarray  # (N, S, S) uint8 class ids
    probabilities: np.ndarray  # (N, S, S, K) float32
    projections: np.ndarray  # (N, H, W, 3) uint8, the generator's reconstruction
    psnr: np.ndarray  # (N,) dB, projection vs input
    ws: np.ndarray  # (N, num_ws, w_dim)


def segment_images(
    segmenter: GANSegmenter, images_uint8: np.ndarray, *, batch_size: int, seed: int = 0, **project_kwargs
) -> Segmentation:
    """Project `images_uint8` (N, R, R, 3) at the generator's resolution `batch_size` at a time
    (`gsd.projection.project` with `project_kwargs`; image i uses seed + i), then segment them."""
    probs, projected, psnr, ws = [], [], [], []
    n = images_uint8.shape[0]
    for s in range(0, n, batch_size):  # one compiled program per chunk shape (the last may be shorter)
        res = projection.project(
            segmenter.module, segmenter.variables, images_uint8[s : s + batch_size], seed=seed + s, **project_kwargs
        )
        _, p, _ = segmenter(jnp.asarray(res.ws), jax.tree.map(jnp.asarray, res.noise))
        probs.append(np.asarray(p))
        projected.append(res.images)
        psnr.append(np.asarray(res.psnr))
        ws.append(np.asarray(res.ws))
    probs = np.concatenate(probs)
    return Segmentation(
        np.argmax(probs, -1).astype(np.uint8),
        probs,
        np.concatenate(projected),
        np.concatenate(psnr),
        np.concatenate(ws),
    )


@dataclasses.dataclass(eq=False)
class UNetSegmenter:
    """The trained auto-shot UNet: uint8 images of any size and aspect -> class ids (or probabilities)."""

    model: unet.UNet
    params: Any
    classes: tuple[str, ...]
    colours: np.ndarray
    batch_size: int = 16

    def probabilities(self, images) -> np.ndarray:
        """(N, H, W, C) or (H, W, C) uint8 (C = 1 or 3, or (H, W) grey) -> probabilities (..., K)."""
        return self._run(images, 'probs')

    def segment(self, images):
        """uint8 images -> class ids: an array (N, H, W) for an array input, or a list of (H, W)
        masks for a list of images of different sizes (each size compiles once; equal sizes batch)."""
        return self._run(images, 'labels')

    def _run(self, images, output: str):
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return unet.predict(self.model, self.params, _rgb_batch(images), self.batch_size, output=output)
        if isinstance(images, np.ndarray):  # one image, (H, W) or (H, W, C)
            return self._run(sources.array_to_square(images, None)[None], output)[0]
        images = [sources.array_to_square(np.asarray(im), None) for im in images]
        results: list = [None] * len(images)
        by_shape: dict = {}
        for i, im in enumerate(images):
            by_shape.setdefault(im.shape, []).append(i)
        for idx in by_shape.values():
            out = self._run(np.stack([images[i] for i in idx]), output)
            for i, o in zip(idx, out):
                results[i] = o
        return results


def _rgb_batch(images: np.ndarray) -> np.ndarray:
    if images.dtype != np.uint8:
        raise TypeError(f'expected uint8 images, got {images.dtype}: refusing to guess their range')
    if images.shape[-1] == 1:
        return np.repeat(images, 3, axis=-1)
    if images.shape[-1] != 3:
        raise ValueError(f'expected (N, H, W, 1) or (N, H, W, 3) images, got shape {images.shape}')
    return images


def load_unet(unet_dir, batch_size: int = 16) -> UNetSegmenter:
    """The UNetSegmenter an `autoshot` run wrote to `unet_dir` (WORKDIR/autoshot/unet; unet.json holds the
    architecture and classes, so no config is needed)."""
    out = pathlib.Path(unet_dir)
    path = out / 'unet.json'
    if not path.exists():
        raise errors.MissingInputError(f'{out}: no trained auto-shot UNet here; run the autoshot stage first')
    meta = _read_json(path)
    model = unet.UNet(
        len(meta['classes']),
        meta['base_width'],
        meta['depth'],
        meta['norm_groups'],
        UNET_DTYPES[meta['dtype']],
        meta.get('conv_impl') or None,
    )
    return UNetSegmenter(
        model, param_store.read_params(out), tuple(meta['classes']), np.asarray(meta['colours'], np.uint8), batch_size
    )
