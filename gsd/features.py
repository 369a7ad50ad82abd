"""Pixel features from a StyleGAN2 generator: chosen synthesis convs, resized to one size and concatenated.

The paper's representation (section 3.1): run the generator, take the activations of its synthesis
convs, resize each to one output size and concatenate along channels. The authors' code resizes to
512 px with bilinear interpolation (align_corners=True) when a map is smaller and area averaging
when it is larger; a popular re-implementation upsampled with nearest neighbours. Both are here.

Which layers: the authors' config reads rosinality's `convs.0` .. `convs.15`, i.e. every synthesis
conv from 8 px up to and including the output resolution, without the 4x4 conv and the ToRGBs:
5,056 channels for a 1024 px config-f model (2 * (4 * 512 + 256 + 128 + 64 + 32)), their
`feature_dim`. The paper's prose ("all pairs except the last", 4..512 px) gives 5,504 with the 4x4
conv or 4,992 without, never 5,056; and their area-downsampling branch only ever runs on 1024 px
layers. So the default here is the code's set.

Memory: the concatenated map is S * S * C floats per image (5 GB at 512 px, 5,056 channels). A head
whose first layer is linear never needs it: `fused_first_layer` applies each layer's slice of that
weight at the layer's own resolution and resizes only the result (resizing is linear).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gsd.stylegan2 import networks

CONV_KINDS = ('conv0', 'conv1')
UPSAMPLE_MODES = ('bilinear', 'nearest')
# Table 7's layer groups by resolution (inclusive; None = up to the generator's resolution).
GROUPS = {'A': (4, 8), 'B': (16, 32), 'C': (64, None)}
PAPER_MIN_RESOLUTION = 8
# A pseudo-layer beside the synthesis convs: the image itself, 3 channels at the generator's resolution.
# On generated images it is the generator's output; on a projected photo, the photo (see
# gsd.segmenters.GANSegmenter): the convs say where a pixel is in the face, the photo's own colour says
# what is there even where the reconstruction blurs it (a toy nose, a mouth's exact outline).
IMAGE = 'image'


def local_contrast(images, size: int):
    """images minus their `size` x `size` box mean (edges replicated), per channel: how much darker or lighter
    a pixel is than its surroundings, whatever the surroundings' own colour (a toy nose is a darker copy of
    the face's skin, and skins range from pale to dark)."""
    pad = size // 2
    padded = jnp.pad(images, ((0, 0), (pad, size - 1 - pad), (pad, size - 1 - pad), (0, 0)), mode='edge')
    mean = jax.lax.reduce_window(padded, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), 'VALID') / size**2
    return images - mean


def layer_resolution(name: str) -> int:
    """'b64.conv1' -> 64."""
    return int(name.split('.')[0][1:])


def conv_layer_names(resolution: int) -> list[str]:
    """Every synthesis conv (no ToRGB, no running RGB) in forward order: 'b4.conv1', 'b8.conv0', ..."""
    return [n for n in networks.layer_names(resolution) if n.split('.')[1] in CONV_KINDS]


def select_layers(
    resolution: int,
    layers: Optional[Sequence[str]] = None,
    res_range: Optional[tuple[int, int]] = None,
    groups: Optional[str] = None,
) -> list[str]:
    """Synthesis convs to read, in forward order, chosen by at most one of:

    * `layers`: explicit names ('b16.conv0', ...);
    * `res_range`: (min_res, max_res), inclusive;
    * `groups`: letters of Table 7's groups, A = 4-8 px, B = 16-32 px, C = 64 px and up, e.g. 'B',
      'AB', 'A+B', 'ABC' (separators '+', '-' and spaces are ignored).

    Default: the authors' set, every conv from 8 px to `resolution`.
    """
    if sum(x is not None for x in (layers, res_range, groups)) > 1:
        raise ValueError('give at most one of layers, res_range, groups')
    convs = conv_layer_names(resolution)
    if layers is not None:
        unknown = [n for n in layers if n not in convs]
        if unknown:
            raise ValueError(f'not synthesis convs of a {resolution} px generator: {unknown}; choose from {convs}')
        chosen = set(layers)
        # Forward order, not the caller's: the channel layout then depends only on the set.
        selected = [n for n in convs if n in chosen]
    else:
        if groups is not None:
            letters = [g for g in groups.upper() if g not in '+- ']
            bad = [g for g in letters if g not in GROUPS]
            if bad or not letters:
                raise ValueError(f'groups must be letters from {sorted(GROUPS)}, got {groups!r}')
            ranges = [GROUPS[g] for g in letters]
        else:
            ranges = [res_range if res_range is not None else (PAPER_MIN_RESOLUTION, None)]
        ranges = [(lo, resolution if hi is None else hi) for lo, hi in ranges]
        selected = [n for n in convs if any(lo <= layer_resolution(n) <= hi for lo, hi in ranges)]
    if not selected:
        raise ValueError(f'no synthesis conv selected (layers={layers}, res_range={res_range}, groups={groups})')
    return selected


# ---------------------------------------------------------------------------------------------
# Resizing. Every mode is a linear map applied separably along H and W, with indices and weights
# computed in numpy at trace time (static shapes), so it costs one or two gathers per axis.


def _bilinear_taps(n_in: int, n_out: int, align_corners: bool):
    """PyTorch's bilinear source positions -> (lower index, upper index, upper weight)."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        # Half-pixel centres, clamped at 0 as PyTorch does (jax.image.resize's convention too).
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


def _nearest_taps(n_in: int, n_out: int):
    """PyTorch's 'nearest': floor(i * in / out); an integer factor repeats each pixel."""
    return np.minimum(np.floor(np.arange(n_out) * (n_in / n_out)).astype(np.int64), n_in - 1)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """PyTorch's 'area' (adaptive average pooling): output i averages [floor(i*in/out), ceil((i+1)*in/out))."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        a, b = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, a:b] = 1.0 / (b - a)
    return m


def _shape_at(ndim: int, axis: int, n: int) -> tuple[int, ...]:
    return tuple(n if d == axis else 1 for d in range(ndim))


def resize_axis(x, axis: int, size: int, upsample: str = 'bilinear', align_corners: bool = True):
    """Resize one axis to `size`: `upsample` when it grows, area averaging when it shrinks."""
    n_in = x.shape[axis]
    if n_in == size:
        return x
    if n_in > size:
        if n_in % size == 0:
            # Block mean: exact f32 arithmetic, no matmul precision to worry about.
            f = n_in // size
            shape = x.shape[:axis] + (size, f) + x.shape[axis + 1 :]
            return jnp.mean(x.reshape(shape), axis=axis + 1)
        m = jnp.asarray(_area_matrix(n_in, size))
        return jnp.moveaxis(
            jnp.tensordot(m, jnp.moveaxis(x, axis, 0), axes=1, precision=jax.lax.Precision.HIGHEST), 0, axis
        )
    if upsample == 'nearest':
        return jnp.take(x, jnp.asarray(_nearest_taps(n_in, size)), axis=axis)
    if upsample == 'bilinear':
        lo, hi, w = _bilinear_taps(n_in, size, align_corners)
        w = jnp.asarray(w).reshape(_shape_at(x.ndim, axis, size)).astype(x.dtype)
        return jnp.take(x, jnp.asarray(lo), axis=axis) * (1 - w) + jnp.take(x, jnp.asarray(hi), axis=axis) * w
    raise ValueError(f'upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}')


def resize(x, size: int, upsample: str = 'bilinear', align_corners: bool = True):
    """(N, H, W, C) -> (N, size, size, C), as the authors' `F.interpolate` calls (see `resize_axis`)."""
    x = resize_axis(x, 1, size, upsample, align_corners)
    return resize_axis(x, 2, size, upsample, align_corners)


# ---------------------------------------------------------------------------------------------
# Layout of the concatenated features, and the fused first layer.


def resize_matrix(n_in: int, n_out: int, upsample: str = 'bilinear', align_corners: bool = True) -> np.ndarray:
    """`resize_axis` as an (n_out, n_in) matrix: out = M @ x along the axis."""
    m = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    if n_in == n_out:
        m[rows, rows] = 1.0
    elif n_in > n_out:
        m = _area_matrix(n_in, n_out)
    elif upsample == 'nearest':
        m[rows, _nearest_taps(n_in, n_out)] = 1.0
    elif upsample == 'bilinear':
        lo, hi, w = _bilinear_taps(n_in, n_out, align_corners)
        np.add.at(m, (rows, lo), 1 - w)
        np.add.at(m, (rows, hi), w)
    else:
        raise ValueError(f'upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}')
    return m


def banded_resize_sum(xs: Sequence[Any], mats: Sequence[np.ndarray], axis: int, block: int = 64):
    """sum_g (mats[g] applied along `axis` of xs[g]): every mats[g] is (S, R_g), xs[g].shape[axis] = R_g,
    the other axes of all xs equal.

    Resizing matrices are banded (a row reads at most a few neighbouring inputs), so the S output
    rows are cut into blocks of `block` and each block multiplies only the window of each input that
    it reads: one batched matmul over (blocks, sum of the windows) instead of a dense (S, sum R_g)
    one, ~8x fewer operations at 512 px. Unlike the gathers of `resize_axis`, whose transposes are
    scatters and which XLA:CPU keeps alive side by side when several are summed, matmuls and static
    slices have matmuls and pads as transposes and one buffer each."""
    n_out = mats[0].shape[0]
    nb = -(-n_out // block)
    starts, widths = [], []
    for m in mats:
        spans = []
        for b in range(nb):
            nz = np.flatnonzero(np.any(m[b * block : (b + 1) * block] != 0, axis=0))
            spans.append((int(nz[0]), int(nz[-1]) + 1) if nz.size else (0, 1))
        width = max(hi - lo for lo, hi in spans)
        starts.append([min(lo, m.shape[1] - width) for lo, _ in spans])
        widths.append(width)
    mb = np.zeros((nb, block, sum(widths)), np.float32)
    for b in range(nb):
        col = 0
        for m, st, width in zip(mats, starts, widths):
            rows = m[b * block : (b + 1) * block, st[b] : st[b] + width]
            mb[b, : rows.shape[0], col : col + width] = rows
            col += width
    moved = [jnp.moveaxis(x, axis, 0) for x in xs]
    rest = moved[0].shape[1:]
    windows = jnp.stack(
        [jnp.concatenate([x[st[b] : st[b] + width] for x, st, width in zip(moved, starts, widths)]) for b in range(nb)]
    ).reshape(nb, sum(widths), -1)
    out = jnp.einsum('bow,bwp->bop', jnp.asarray(mb, windows.dtype), windows, precision=jax.lax.Precision.HIGHEST)
    return jnp.moveaxis(out.reshape((nb * block,) + rest)[:n_out], 0, axis)


def _widen(a, dtype):
    if a.dtype == jnp.bfloat16 and dtype == jnp.float32:
        # bfloat16 is float32's upper half: the same exact widening as astype, spelt as integer ops
        # because XLA:CPU moves a convert ahead of the training loop's gather of the step's image and
        # then out of the loop, widening every stored image at once (2.6 GB for 10 shots at 512 px).
        bits = jax.lax.bitcast_convert_type(a, jnp.uint16).astype(jnp.uint32) << 16
        return jax.lax.bitcast_convert_type(bits, jnp.float32)
    return a.astype(dtype)


@functools.partial(jax.checkpoint, static_argnums=2)
def _project(a, weight, precision):
    # Activations stored in a narrower dtype (bfloat16) are widened to the weight's here, per layer;
    # rematerialised so that the backward pass keeps the stored activations, not the widened copy.
    dtype = jnp.promote_types(a.dtype, weight.dtype)
    return jnp.einsum('nhwc,cf->nhwf', _widen(a, dtype), weight.astype(dtype), precision=precision)


def fused_first_layer(
    acts: Mapping[str, Any],
    weight,
    bias,
    layer_names: Sequence[str],
    channel_offsets: Optional[Sequence[int]],
    out_size: int,
    upsample: str = 'bilinear',
    align_corners: bool = True,
    precision=None,
):
    """concat_i(resize(a_i)) @ weight + bias, without building the (S, S, C_total) map.

    weight: (C_total, F), rows in the concatenation's channel order; `channel_offsets[i]` is the
    first row of `layer_names[i]` (None: consecutive in `layer_names` order). Because every resize
    mode is linear and acts on space only, resize(a_i) @ W_i = resize(a_i @ W_i): each slice runs at
    its layer's own resolution, the layers of one resolution are summed there, and only F channels
    are resized, once per resolution: along W per resolution, then along H for all of them in one
    `banded_resize_sum`, so a single (S, S, F) map is made. Activations narrower than the weight
    (bfloat16 storage) are computed in the weight's dtype: their storage is rounded, the arithmetic
    is not. Returns (N, S, S, F) in the wider of the two dtypes.
    """
    if channel_offsets is None:
        channel_offsets = np.cumsum([0] + [acts[n].shape[-1] for n in layer_names[:-1]]).tolist()
    by_size = {}
    for name, offset in zip(layer_names, channel_offsets):
        a = acts[name]
        y = _project(a, weight[offset : offset + a.shape[-1]], precision)
        size = a.shape[1:3]
        by_size[size] = y if size not in by_size else by_size[size] + y
    out = by_size.pop((out_size, out_size), None)
    if by_size:
        cols = [
            banded_resize_sum([y], [resize_matrix(w, out_size, upsample, align_corners)], axis=2)
            for (_, w), y in by_size.items()
        ]
        up = banded_resize_sum(cols, [resize_matrix(h, out_size, upsample, align_corners) for h, _ in by_size], axis=1)
        out = up if out is None else out + up
    return out + bias


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
    """Which layers, their channels, and how they are resized and stacked: all a head needs to read
    per-layer activations (fused path) or to interpret the concatenated map's channels."""

    layers: tuple[str, ...]
    layer_channels: tuple[int, ...]
    out_size: int
    upsample: str = 'bilinear'
    align_corners: bool = True

    def __post_init__(self):
        if self.upsample not in UPSAMPLE_MODES:
            raise ValueError(f'upsample must be one of {UPSAMPLE_MODES}, got {self.upsample!r}')
        if len(self.layers) != len(self.layer_channels):
            raise ValueError('one channel count per layer')

    @classmethod
    def for_generator(
        cls,
        resolution: int,
        channels: Sequence[int],
        layers: Sequence[str],
        out_size: int,
        upsample: str = 'bilinear',
        align_corners: bool = True,
        image_channels: int = 3,
    ) -> 'FeatureLayout':
        """From a generator's resolution and per-block channels (4..resolution, as `Generator.channels`);
        `image_channels`: the width of the `IMAGE` pseudo-layer, when `layers` has it."""
        per_block = dict(zip(networks.block_resolutions(resolution), channels))
        return cls(
            tuple(layers),
            tuple(image_channels if n == IMAGE else per_block[layer_resolution(n)] for n in layers),
            out_size,
            upsample,
            align_corners,
        )

    @property
    def channels(self) -> int:
        return sum(self.layer_channels)

    @property
    def channel_offsets(self) -> tuple[int, ...]:
        return tuple(int(o) for o in np.cumsum((0,) + self.layer_channels[:-1]))

    def concat(self, acts: Mapping[str, Any], dtype=None):
        """{name: (N, R, R, C_i)} -> (N, S, S, sum C_i)."""
        maps = [resize(acts[n], self.out_size, self.upsample, self.align_corners) for n in self.layers]
        out = jnp.concatenate(maps, axis=-1)
        return out if dtype is None else out.astype(dtype)

    def first_layer(self, acts: Mapping[str, Any], weight, bias, precision=None):
        """`fused_first_layer` with this layout."""
        return fused_first_layer(
            acts,
            weight,
            bias,
            self.layers,
            self.channel_offsets,
            self.out_size,
            self.upsample,
            self.align_corners,
            precision,
        )


@dataclasses.dataclass(eq=False)  # identity hash: its jitted methods are bound to it
class FeatureExtractor:
    """Reads a generator's chosen conv activations (`activations`) or the resized, concatenated
    feature map (`extract`). Each method is one jitted program, compiled on first use per shape.

    ``layers=None`` takes the authors' set (`select_layers`). ``image_channels`` adds the pseudo-layer
    `IMAGE` after them: the generator's output image times ``image_weight``, and with ``contrast_weight``
    > 0 also its `local_contrast` (box ``contrast_size``) times that weight. ``dtype`` is the storage dtype of
    `extract`'s output (e.g. bfloat16 halves the memory of a 5,056-channel map) and the default one
    of `stored_activations`.
    """

    generator: networks.Generator
    out_size: int
    layers: Optional[Sequence[str]] = None
    upsample: str = 'bilinear'
    align_corners: bool = True
    dtype: Any = jnp.float32
    image_channels: bool = False
    image_weight: float = 1.0
    contrast_weight: float = 0.0
    contrast_size: int = 9

    def __post_init__(self):
        g = self.generator
        # Validates explicit names and puts them in forward order; None = the authors' set.
        convs = [n for n in self.layers if n != IMAGE] if self.layers else None
        self.layers = tuple(select_layers(g.resolution, layers=convs))
        names = self.layers + ((IMAGE,) if self.image_channels else ())
        self.layout = FeatureLayout.for_generator(
            g.resolution,
            g.channels,
            names,
            self.out_size,
            self.upsample,
            self.align_corners,
            image_channels=6 if self.contrast_weight else 3,
        )
        self._run = jax.jit(self.traced_images_and_activations, static_argnames='noise_mode')
        self._run_features = jax.jit(self._images_and_features, static_argnames='noise_mode')
        self._fill = jax.jit(self._fill_batch, static_argnames='noise_mode', donate_argnums=0)

    @property
    def channels(self) -> int:
        return self.layout.channels

    def traced_images_and_activations(self, variables, ws, noise=None, rng=None, noise_mode: str = 'const'):
        """`images_and_activations` not jitted, for use inside a caller's own jitted program."""
        rngs = None if rng is None else {'noise': rng}
        if noise_mode == 'random' and rng is None and noise is None:
            raise ValueError("noise_mode='random' needs rng")
        images, acts = networks.capture_activations(self.generator, variables, ws, noise_mode, noise, rngs)
        # Only the selected layers leave the program; XLA drops the rest.
        acts = {n: acts[n] for n in self.layers}
        if self.image_channels:
            acts[IMAGE] = self.image_input(images)
        return images, acts

    def image_input(self, images):
        """The `IMAGE` pseudo-layer from images in the generator's output range ([-1, 1]) and size."""
        if not self.contrast_weight:
            return self.image_weight * images
        contrast = local_contrast(images, self.contrast_size)
        return jnp.concatenate([self.image_weight * images, self.contrast_weight * contrast], axis=-1)

    def example_activations(self, batch: int = 1) -> dict:
        """Zeros shaped like `activations`' output, {name: (batch, R, R, C)}: builds a head with no generator run."""
        res = lambda n: self.generator.resolution if n == IMAGE else layer_resolution(n)
        layout = self.layout
        return {n: jnp.zeros((batch, res(n), res(n), c)) for n, c in zip(layout.layers, layout.layer_channels)}

    def _images_and_features(self, variables, ws, noise, rng, noise_mode):
        images, acts = self.traced_images_and_activations(variables, ws, noise, rng, noise_mode)
        return images, self.layout.concat(acts, self.dtype)

    def _fill_batch(self, stored, variables, ws, noise, rng, start, noise_mode):
        acts = self.traced_images_and_activations(variables, ws, noise, rng, noise_mode)[1]
        return {
            n: jax.lax.dynamic_update_slice_in_dim(stored[n], acts[n].astype(stored[n].dtype), start, 0)
            for n in self.layout.layers
        }

    def stored_activations(
        self, variables, ws, batch_size: int = 1, dtype=None, noise_mode: str = 'const', noise=None, rng=None
    ) -> dict:
        """`activations` for many images, `batch_size` at a time, written into buffers allocated once
        in `dtype` (default: this extractor's ``dtype``): the peak is the result plus one batch's
        synthesis pass, where `activations` on all N holds N images' intermediates at once and
        gathering batches on the host and concatenating holds the result twice. 10 shots of a 512 px
        config-f generator are 2.6 GB in float32, 1.3 GB in bfloat16 (which `gsd.nn.heads` widens back to
        float32 for its arithmetic). Explicit (N, R, R) noise is sliced per batch; with
        noise_mode='random', batch k draws from fold_in(rng, k * batch_size), not as one N-image call."""
        n = ws.shape[0]
        dtype = jnp.dtype(dtype or self.dtype)
        shapes = jax.eval_shape(
            lambda v, w: self.traced_images_and_activations(v, w, None, rng, noise_mode)[1], variables, ws[:1]
        )
        stored = {k: jnp.zeros((n,) + s.shape[1:], dtype) for k, s in shapes.items()}
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            batch_noise = (
                None if noise is None else jax.tree.map(lambda a: a[start:stop] if jnp.ndim(a) == 3 else a, noise)
            )
            batch_rng = None if rng is None else jax.random.fold_in(rng, start)
            stored = self._fill(
                stored, variables, ws[start:stop], batch_noise, batch_rng, jnp.int32(start), noise_mode=noise_mode
            )
        return stored

    def activations(self, variables, ws, noise_mode: str = 'const', noise=None, rng=None) -> dict:
        """ws (N, w_dim) or (N, num_ws, w_dim) -> {name: (N, R, R, C)} at native resolutions."""
        return self._run(variables, ws, noise, rng, noise_mode=noise_mode)[1]

    def images_and_activations(self, variables, ws, noise_mode: str = 'const', noise=None, rng=None):
        """(images (N, H, W, 3) raw, {name: (N, R, R, C)})."""
        return self._run(variables, ws, noise, rng, noise_mode=noise_mode)

    def extract(self, variables, ws, noise_mode: str = 'const', noise=None, rng=None):
        """ws -> concatenated features (N, out_size, out_size, channels)."""
        return self._run_features(variables, ws, noise, rng, noise_mode=noise_mode)[1]

    def images_and_features(self, variables, ws, noise_mode: str = 'const', noise=None, rng=None):
        """(images, features) from one synthesis pass."""
        return self._run_features(variables, ws, noise, rng, noise_mode=noise_mode)
