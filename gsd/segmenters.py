"""What the training stages produce, loaded for use: the GAN with its few-shot heads, and the auto-shot UNet.

`GANSegmenter` maps w+ (and noise) to part probabilities through the generator and an ensemble of heads;
`segment_images` projects real images into the GAN first. `UNetSegmenter` segments images of any size
with no GAN. `load_heads` / `load_unet` read them from the directories the `fewshot` and `autoshot`
stages write (WORKDIR/heads, WORKDIR/autoshot/unet).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gsd import errors, features, projection
from gsd.io import param_store, sources
from gsd.nn import encoder as encoder_lib
from gsd.nn import heads, unet
from gsd.training import parallel

HEAD_KINDS = ('cnn', 'mlp')
UNET_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
ENCODER_FORMAT = 'gsd-encoder-1'
# Encoders shipped inside the package, by `projection.encoder` value (paths relative to the gsd package).
SHIPPED_ENCODERS = {'gsd:toy_encoder': 'toy/assets/toy_encoder'}


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

    @property
    def uses_image(self) -> bool:
        """Whether the heads read the image itself beside the generator's features (`features.IMAGE`)."""
        return self.extractor.image_channels

    def member_logits(self, params, variables, ws, noise=None, noise_mode: str = 'const', images=None):
        """(images raw (N, H, W, 3), every member's logits (M, N, S, S, K)); traceable, for callers' programs.

        `images` (N, H, W, 3) in [-1, 1] at the generator's size: the photos that `ws` reconstruct, read by heads
        with image channels in place of the generator's output (None: the generator's output)."""
        out, acts = self.extractor.traced_images_and_activations(variables, ws, noise, None, noise_mode)
        if images is not None and self.uses_image:
            acts = {**acts, features.IMAGE: self.extractor.image_input(images.astype(out.dtype))}
        return out, heads.ensemble_logits(self.head, params, acts)

    def _probabilities(self, params, variables, ws, noise, noise_mode, images):
        out, logits = self.member_logits(params, variables, ws, noise, noise_mode, images)
        return out, jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0), jnp.mean(logits, axis=0)

    def __call__(self, ws, noise=None, noise_mode: str = 'const', images=None):
        """(images raw (N, H, W, 3), probabilities (N, S, S, K), mean logits (N, S, S, K)); `images` as in
        `member_logits`."""
        return self._probs(self.params, self.variables, ws, noise, noise_mode=noise_mode, images=images)


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
        module,
        meta['feature_size'],
        meta['layers'],
        meta['upsample'],
        meta['align_corners'],
        image_channels=bool(meta.get('image_channels', False)),
        image_weight=float(meta.get('image_weight', 1.0)),
        contrast_weight=float(meta.get('contrast_weight', 0.0)),
        contrast_size=int(meta.get('contrast_size', 9)),
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


def generator_fingerprint(variables) -> str:
    """A short hash of a generator's weights: an encoder records the one it was trained for."""
    digest = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(jax.device_get(variables)), key=lambda t: str(t[0])):
        digest.update(str(path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
    return digest.hexdigest()[:16]


def encoder_path(value) -> pathlib.Path | None:
    """The directory a `projection.encoder` value names: '' -> None, a shipped name ('gsd:toy_encoder') or a
    path (which must hold an encoder.json)."""
    value = str(value or '').strip()
    if not value:
        return None
    if value in SHIPPED_ENCODERS:
        path = pathlib.Path(__file__).resolve().parent / SHIPPED_ENCODERS[value]
    elif value.startswith('gsd:'):
        raise errors.SettingError(
            f'projection.encoder: unknown shipped encoder {value!r}; known: {", ".join(SHIPPED_ENCODERS)}'
        )
    else:
        path = pathlib.Path(value).expanduser()
    if not (path / 'encoder.json').exists():
        raise errors.MissingInputError(f'{path}: no trained encoder here (encoder.json); run the encoder stage first')
    return path


def load_encoder(encoder_dir, module, variables) -> encoder_lib.TrainedEncoder:
    """The encoder an `encoder` stage wrote to `encoder_dir` (or a shipped name), for the generator (module,
    variables) it was trained for: another generator (by its weights' fingerprint or shape) is refused."""
    path = encoder_path(encoder_dir)
    if path is None:
        raise errors.SettingError('projection.encoder: empty; give an encoder directory or a shipped name')
    meta = _read_json(path / 'encoder.json')
    if not isinstance(meta, dict) or meta.get('format') != ENCODER_FORMAT:
        raise errors.BadFileError(f'{path / "encoder.json"}: not a gsd encoder description ({ENCODER_FORMAT})')
    try:
        arch = meta['architecture']
        enc = encoder_lib.Encoder(
            int(arch['num_ws']), int(arch['w_dim']), tuple(arch['widths']), int(arch['hidden']), int(arch['groups'])
        )
        trained_for = meta['generator']['fingerprint']
        resolution = int(arch['resolution'])
    except (KeyError, TypeError, ValueError) as e:
        raise errors.BadFileError(f'{path / "encoder.json"}: damaged ({type(e).__name__}: {e})') from None
    if (enc.num_ws, enc.w_dim, resolution) != (module.num_ws, module.w_dim, module.resolution):
        raise errors.SettingError(
            f'{path}: this encoder is for a {resolution} px generator with w+ {enc.num_ws}x{enc.w_dim}, '
            f'not this {module.resolution} px one with {module.num_ws}x{module.w_dim}'
        )
    if trained_for != generator_fingerprint(variables):
        raise errors.SettingError(
            f'{path}: this encoder was trained for another generator ({meta["generator"].get("checkpoint") or "?"}, '
            f'weights {trained_for}); train one for this generator with the encoder stage'
        )
    params = param_store.read_params(path)
    expected = jax.eval_shape(lambda: encoder_lib.init_params(enc, jax.random.PRNGKey(0), resolution))
    if jax.tree.structure(params) != jax.tree.structure(expected) or any(
        np.shape(a) != b.shape for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected))
    ):
        raise errors.BadFileError(f'{path / "params"}: parameters do not match the architecture in encoder.json')
    w_avg, _ = projection.w_statistics(module, variables)
    return encoder_lib.TrainedEncoder(enc, jax.device_put(params), w_avg, meta)


@dataclasses.dataclass
class Projected:
    """Real images projected into the GAN (`project_images`): what reproduces them, whatever heads come next."""

    ws: np.ndarray  # (N, num_ws, w_dim) float32
    noise: dict  # {'b8.conv0': (N, 8, 8), ...} float32
    images: np.ndarray  # (N, H, W, 3) uint8, the generator's reconstruction
    psnr: np.ndarray  # (N,) dB, reconstruction vs input


def project_images(
    module, variables, images_uint8: np.ndarray, *, batch_size: int, seed: int = 0, encoder=None, **project_kwargs
) -> Projected:
    """Project `images_uint8` (N, R, R, 3) into the generator (module, variables), `batch_size` at a time
    (`gsd.projection.project` with `project_kwargs`; image i uses seed + i). `encoder`: None, or a
    `TrainedEncoder` / encoder directory / shipped name whose w+ starts each projection (hybrid inversion)
    instead of w_avg. The result serves any heads on this generator (`segment_projected`)."""
    if encoder is not None and not isinstance(encoder, encoder_lib.TrainedEncoder):
        encoder = load_encoder(encoder, module, variables)

    def chunk(index: int):
        start = index * batch_size
        part = images_uint8[start : start + batch_size]
        init_ws = None if encoder is None else encoder(_at_resolution(part, module.resolution))
        res = projection.project(module, variables, part, seed=seed + start, init_ws=init_ws, **project_kwargs)
        return {
            'ws': np.asarray(res.ws),
            'noise': {k: np.asarray(v) for k, v in res.noise.items()},
            'images': np.asarray(res.images),
            'psnr': np.asarray(res.psnr),
        }

    # One compiled program per chunk shape; on several processes each projects its share of the chunks.
    parts = parallel.split_over_processes(chunk, -(-images_uint8.shape[0] // batch_size))
    return Projected(
        np.concatenate([p['ws'] for p in parts]),
        {k: np.concatenate([p['noise'][k] for p in parts]) for k in parts[0]['noise']},
        np.concatenate([p['images'] for p in parts]),
        np.concatenate([p['psnr'] for p in parts]),
    )


def segment_projected(
    segmenter: GANSegmenter, projected: Projected, images_uint8: np.ndarray, *, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(masks (N, S, S) uint8, probabilities (N, S, S, K)) of the heads on projected images; heads with image
    channels read the photos `images_uint8` themselves beside the reconstruction's features."""
    probs = []
    for s in range(0, projected.ws.shape[0], batch_size):
        noise = {k: jnp.asarray(v[s : s + batch_size]) for k, v in projected.noise.items()}
        chunk = images_uint8[s : s + batch_size]
        photos = _at_resolution(chunk, segmenter.module.resolution) / 127.5 - 1.0 if segmenter.uses_image else None
        _, p, _ = segmenter(jnp.asarray(projected.ws[s : s + batch_size]), noise, images=photos)
        probs.append(np.asarray(p))
    probs = np.concatenate(probs)
    return np.argmax(probs, -1).astype(np.uint8), probs


def segment_images(
    segmenter: GANSegmenter,
    images_uint8: np.ndarray,
    *,
    batch_size: int,
    seed: int = 0,
    encoder=None,
    **project_kwargs,
) -> Segmentation:
    """Project `images_uint8` (N, R, R, 3) at the generator's resolution (`project_images`), then segment
    them (`segment_projected`)."""
    proj = project_images(
        segmenter.module,
        segmenter.variables,
        images_uint8,
        batch_size=batch_size,
        seed=seed,
        encoder=encoder,
        **project_kwargs,
    )
    masks, probs = segment_projected(segmenter, proj, images_uint8, batch_size=batch_size)
    return Segmentation(masks, probs, proj.images, proj.psnr, proj.ws)


def _at_resolution(images_uint8, resolution: int):
    """uint8 images resized (area/bilinear, as the projection does its targets) to the generator's size."""
    x = jnp.asarray(images_uint8, jnp.float32)
    if x.shape[1:3] == (resolution, resolution):
        return x
    x = features.resize_axis(
        features.resize_axis(x, 1, resolution, align_corners=False), 2, resolution, align_corners=False
    )
    return jnp.clip(jnp.round(x), 0, 255)


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
