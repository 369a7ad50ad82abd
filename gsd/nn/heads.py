"""Few-shot segmentation heads (the paper's CNN and MLP) and a trainer for many heads in one program.

Both heads map per-pixel GAN features (N, S, S, C) to class logits (N, S, S, K). Their first layer
is linear per pixel (`PixelDense`), so with ``first_layer_fused=True`` and a `FeatureLayout` a head
reads the per-layer activations dict ({name: (N, R, R, C_i)}, see `gsd.features`) instead and never
builds the concatenated map; the parameters are the same in both forms, so a head trained one way
runs the other.

Fidelity to the authors' code (network.py, train.py of the official release):
* leaky ReLU slope 0.01: they call `F.leaky_relu` with PyTorch's default; the paper does not say;
* initialisation is PyTorch's default for Conv2d / Linear (weights and biases uniform in
  +-1/sqrt(fan_in)), which matters for a 1000-epoch run with weight decay;
* Adam(lr 1e-3, weight_decay 1e-3) is `torch.optim.Adam`, whose weight decay is L2 added to the
  gradient before the moment estimates (not AdamW's decoupled decay);
* one image per step, images in a fixed order (their loader does not shuffle), cross-entropy
  averaged over pixels; lr multiplied by `lr_decay_factor` every `lr_decay_every` epochs (paper:
  / 10 every 50; their code: x 0.9, stepped after epochs 50, 100, ..., one epoch later than here).

`train_heads` trains M heads (ensemble members, seeds, shot subsets) in one compiled program: the
heads are vmapped within a device and split over devices with `jax.shard_map` on a 'heads' axis;
epochs and steps are `lax.scan`s, so there is no host round trip until the end.

Memory of a CNN-head step (10 shots at 512 px: 2.6 GB of activations in float32, 1.3 GB in
bfloat16): the fused first layer makes one (S, S, 128) map (`gsd.features.fused_first_layer`); each
conv applies the previous layer's leaky ReLU to its input, so the backward pass keeps one map per
layer; on CPU the convs run as `leaky_conv3x3_taps`, whose backward holds one shifted copy at a time
(im2col's kept a 9x-wide one, 1.2 GB for the first conv at 512 px). bfloat16 activations are gathered
as raw 16-bit words and widened per layer inside the step (see `_take`); the arithmetic is float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsd.features import FeatureLayout
from gsd.nn.layers import Conv3x3, torch_bias_init, torch_kernel_init
from gsd.training import parallel

PAPER_CNN_DILATIONS = (2, 4, 8, 1, 2, 4, 8, 1)
PAPER_CNN_CHANNELS = (64, 64, 64, 64, 64, 64, 32)  # then num_classes
PAPER_CNN_EMBED = 128
PAPER_MLP_HIDDEN = (2000, 200)
AUTHORS_LEAKY_SLOPE = 0.01  # torch.nn.functional.leaky_relu's default, as the authors call it


class PixelDense(nn.Module):
    """Per-pixel linear layer (a 1x1 conv): on a feature map (N, S, S, C), or fused on the per-layer
    activations dict with `layout` (see `gsd.features.fused_first_layer`). Params: kernel (C, F), bias (F,)."""

    features: int
    layout: Optional[FeatureLayout] = None
    fused: bool = False
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        if self.fused:
            if self.layout is None:
                raise ValueError('a fused first layer needs a FeatureLayout')
            if not isinstance(x, Mapping):
                raise TypeError('first_layer_fused=True: call the head on the activations dict {name: (N, R, R, C)}')
            fan_in = self.layout.channels
        else:
            if isinstance(x, Mapping):
                raise TypeError('first_layer_fused=False: call the head on the feature map (N, S, S, C)')
            fan_in = x.shape[-1]
        kernel = self.param('kernel', torch_kernel_init, (fan_in, self.features))
        bias = self.param('bias', torch_bias_init(fan_in), (self.features,))
        if self.fused:
            return self.layout.first_layer(x, kernel, bias, self.precision)
        return jnp.einsum('nhwc,cf->nhwf', x, kernel.astype(x.dtype), precision=self.precision) + bias


def _check_in_features(head, x):
    if head.first_layer_fused and head.layout is None:
        raise ValueError(f'{type(head).__name__}(first_layer_fused=True) needs a FeatureLayout')
    if head.in_features is None:
        return
    c = head.layout.channels if head.first_layer_fused else x.shape[-1]
    if c != head.in_features:
        raise ValueError(f'{type(head).__name__} expects {head.in_features} input channels, got {c}')


class CNNHead(nn.Module):
    """The paper's CNN: 1x1 conv C -> 128, then 3x3 convs with dilations 2,4,8,1,2,4,8,1 and
    channels 64 x6, 32, num_classes; leaky ReLU after every layer but the last; zero padding =
    dilation, as the authors' PyTorch convs. Receptive field 1 + 2 * sum(dilations) = 61 px.

    Input: features (N, S, S, C), or with ``first_layer_fused`` the activations dict (needs `layout`).
    Output: logits (N, S, S, num_classes).
    """

    num_classes: int
    in_features: Optional[int] = None  # checked against the input when given
    embed_features: int = PAPER_CNN_EMBED
    channels: Sequence[int] = PAPER_CNN_CHANNELS
    dilations: Sequence[int] = PAPER_CNN_DILATIONS
    negative_slope: float = AUTHORS_LEAKY_SLOPE
    first_layer_fused: bool = False
    layout: Optional[FeatureLayout] = None
    conv_impl: Optional[str] = None  # see Conv3x3; None: 'taps' on CPU, else 'xla'
    precision: Any = None
    remat: bool = True  # impls other than 'taps': recompute activations in backward

    @property
    def conv_channels(self) -> tuple[int, ...]:
        return tuple(self.channels) + (self.num_classes,)

    @nn.compact
    def __call__(self, x):
        if len(self.dilations) != len(self.conv_channels):
            raise ValueError(f'{len(self.conv_channels)} 3x3 convs need as many dilations, got {self.dilations}')
        _check_in_features(self, x)
        y = PixelDense(self.embed_features, self.layout, self.first_layer_fused, self.precision, name='embed')(x)
        impl = self.conv_impl or ('taps' if jax.default_backend() == 'cpu' else 'xla')
        # Each conv applies the previous layer's leaky ReLU to its input (none before conv0: the embed
        # output is activated by conv0), so a layer's input is the one map its backward needs; 'taps'
        # keeps only that by construction, other impls are rematerialised to the same end.
        conv = (
            Conv3x3
            if impl == 'taps' or not self.remat
            else nn.remat(Conv3x3, policy=jax.checkpoint_policies.nothing_saveable)
        )
        for i, (ch, d) in enumerate(zip(self.conv_channels, self.dilations)):
            y = conv(ch, d, impl, self.precision, self.negative_slope, name=f'conv{i}')(y)
        return y


class MLPHead(nn.Module):
    """The paper's per-pixel MLP: C -> 2000 -> 200 -> num_classes, ReLU on the hidden layers.

    Input and output as `CNNHead`.
    """

    num_classes: int
    in_features: Optional[int] = None
    hidden: Sequence[int] = PAPER_MLP_HIDDEN
    first_layer_fused: bool = False
    layout: Optional[FeatureLayout] = None
    precision: Any = None

    @nn.compact
    def __call__(self, x):
        _check_in_features(self, x)
        y = PixelDense(self.hidden[0], self.layout, self.first_layer_fused, self.precision, name='fc0')(x)
        for i, width in enumerate(tuple(self.hidden[1:]) + (self.num_classes,), start=1):
            y = nn.relu(y)
            y = nn.Dense(
                width,
                precision=self.precision,
                kernel_init=torch_kernel_init,
                bias_init=torch_bias_init(y.shape[-1]),
                name=f'fc{i}',
            )(y)
        return y


def param_count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
# Training many heads at once

Features = Union[jax.Array, Mapping[str, jax.Array]]


def torch_adam(weight_decay: float) -> optax.GradientTransformation:
    """torch.optim.Adam's direction (defaults b1 0.9, b2 0.999, eps 1e-8) with L2 weight decay added
    to the gradient; the caller multiplies by -lr, whose schedule depends on the epoch, not the step."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8))


def _take(a, idx):
    if a.dtype == jnp.uint16:
        # bfloat16 activations travel as their raw 16-bit words (see `_bf16_as_bits`): XLA:CPU has no
        # bfloat16 gather or dynamic slice and rewrites one as the same op on the float32-widened
        # operand, a widening that it then hoists out of the training loop, i.e. the whole stored
        # data set in float32 (2.6 GB for 10 shots at 512 px) alongside the bfloat16 one.
        return jax.lax.bitcast_convert_type(jnp.take(a, idx, axis=0), jnp.bfloat16)
    return jnp.take(a, idx, axis=0)


def _take_images(data: Features, idx):
    return jax.tree.map(lambda a: _take(a, idx), data)


def _bf16_as_bits(a):
    """A bfloat16 CPU array as uint16 words in the same memory (no copy); others unchanged."""
    if getattr(a, 'dtype', None) != jnp.bfloat16 or jax.default_backend() != 'cpu':
        return a
    if isinstance(a, jax.Array) and a.is_fully_addressable and len(a.devices()) == 1:
        return jax.device_put(np.asarray(a).view(np.uint16), next(iter(a.devices())), may_alias=True)
    return jax.device_put(np.asarray(a).view(np.uint16))


def _train_one(
    head,
    key,
    indices,
    mask,
    data,
    labels,
    lr,
    weight_decay,
    lr_decay_factor,
    *,
    epochs,
    batch_size,
    lr_decay_every,
    shuffle,
):
    """One head: init from `key`, then `epochs` passes over its images `indices[mask]` in batches."""
    tx = torch_adam(weight_decay)
    params = head.init(key, _take_images(data, jnp.zeros((1,), jnp.int32)))['params']
    opt_state = tx.init(params)
    steps = indices.shape[0] // batch_size

    def loss_fn(params, x, y, valid):
        logits = head.apply({'params': params}, x)
        per_image = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(axis=(1, 2))
        return jnp.sum(per_image * valid) / jnp.maximum(jnp.sum(valid), 1.0)

    def step(lr_now, idx, msk, carry, k):
        params, opt_state = carry
        b_idx = jax.lax.dynamic_slice_in_dim(idx, k * batch_size, batch_size)
        valid = jax.lax.dynamic_slice_in_dim(msk, k * batch_size, batch_size).astype(jnp.float32)
        loss, grads = jax.value_and_grad(loss_fn)(params, _take_images(data, b_idx), jnp.take(labels, b_idx, 0), valid)
        updates, new_opt = tx.update(grads, opt_state, params)
        new_params = jax.tree.map(lambda p, u: p - lr_now * u, params, updates)
        # A step with no image (padding of a shorter subset) changes nothing, Adam's count included.
        any_valid = jnp.sum(valid) > 0
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(any_valid, a, b), new, old)
        return (keep(new_params, params), keep(new_opt, opt_state)), (loss, any_valid)

    def epoch(carry, e):
        lr_now = lr * lr_decay_factor ** (e // lr_decay_every).astype(jnp.float32)
        idx, msk = indices, mask
        if shuffle:
            perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, 1), e), idx.shape[0])
            idx, msk = idx[perm], msk[perm]
        carry, (losses, valid) = jax.lax.scan(functools.partial(step, lr_now, idx, msk), carry, jnp.arange(steps))
        mean_loss = jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)
        return carry, mean_loss

    (params, _), losses = jax.lax.scan(epoch, (params, opt_state), jnp.arange(epochs))
    return params, losses


@functools.partial(jax.jit, static_argnames=('head', 'epochs', 'batch_size', 'lr_decay_every', 'shuffle', 'mesh'))
def _train_program(
    head,
    keys,
    indices,
    mask,
    data,
    labels,
    lr,
    weight_decay,
    lr_decay_factor,
    *,
    epochs,
    batch_size,
    lr_decay_every,
    shuffle,
    mesh,
):
    one = functools.partial(
        _train_one, head, epochs=epochs, batch_size=batch_size, lr_decay_every=lr_decay_every, shuffle=shuffle
    )
    per_device = jax.vmap(one, in_axes=(0, 0, 0, None, None, None, None, None))
    # check_vma off: the optimizer's step count starts as a device-invariant constant and becomes
    # per-head inside the scans; every output is per-head (P('heads')) anyway.
    return jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(P('heads'), P('heads'), P('heads'), P(), P(), P(), P(), P()),
        out_specs=(P('heads'), P('heads')),
        check_vma=False,
    )(keys, indices, mask, data, labels, lr, weight_decay, lr_decay_factor)


def heads_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-D Mesh over `devices` (default: every device of every process) with axis 'heads'."""
    return parallel.mesh(devices, axis='heads')


def train_heads(
    make_head: Union[nn.Module, Callable[[], nn.Module]],
    init_keys,
    features: Features,
    labels,
    *,
    epochs: int = 1000,
    lr: float = 1e-3,
    weight_decay: float = 1e-3,
    lr_decay_every: int = 50,
    lr_decay_factor: float = 0.1,
    batch_size: int = 1,
    image_indices=None,
    index_mask=None,
    shuffle: bool = False,
    mesh: Optional[Mesh] = None,
):
    """Train M independent heads, one per key, in one compiled program.

    make_head: the head module, or a zero-argument callable returning it (all M share the architecture).
    init_keys: (M,) typed keys (`jax.random.key`) or (M, 2) raw uint32 keys; key m initialises head m
      (and, with `shuffle`, orders its images each epoch).
    features: (N, S, S, C) feature maps, or the per-layer activations dict for a fused head; float32
      or bfloat16 (for a fused head, storage only: its first layer widens them and computes in float32).
    labels: (N, S, S) integer class maps.
    image_indices: (M, K) int, the images each head trains on, in order (default: all N, for every
      head); index_mask: (M, K) bool, which of those entries are real, so that heads can have
      different numbers of shots (1-, 5- and 10-shot heads in one program). An epoch is
      ceil(K / batch_size) steps; a step without any real image leaves the head untouched.
    lr schedule: lr * lr_decay_factor ** (epoch // lr_decay_every) (defaults: the paper's / 10 every 50).
    mesh: a Mesh with a 'heads' axis (default: every device of every process); M is padded up to a multiple of
      its size and the padding dropped.

    Returns (params stacked along a leading M axis, per-epoch mean loss (M, epochs)).
    """
    head = make_head if isinstance(make_head, nn.Module) else make_head()
    keys = init_keys if jnp.issubdtype(init_keys.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(init_keys)
    m = keys.shape[0]
    n = labels.shape[0]
    if image_indices is None:
        image_indices = np.broadcast_to(np.arange(n), (m, n))
    image_indices = jnp.asarray(image_indices, jnp.int32)
    index_mask = jnp.ones(image_indices.shape, bool) if index_mask is None else jnp.asarray(index_mask, bool)
    if image_indices.shape[0] != m or index_mask.shape != image_indices.shape:
        raise ValueError(
            f'image_indices and index_mask must be (M={m}, K), got {image_indices.shape}, {index_mask.shape}'
        )
    # Pad K to whole batches (masked out) and M to whole devices (copies of head 0, dropped below).
    k_pad = -image_indices.shape[1] % batch_size
    image_indices = jnp.pad(image_indices, ((0, 0), (0, k_pad)))
    index_mask = jnp.pad(index_mask, ((0, 0), (0, k_pad)))
    mesh = mesh or heads_mesh()
    m_pad = -m % mesh.shape['heads']
    pad_rows = lambda a: jnp.concatenate([a, jnp.repeat(a[:1], m_pad, axis=0)]) if m_pad else a
    args = (
        pad_rows(keys),
        pad_rows(image_indices),
        pad_rows(index_mask),
        jax.tree.map(_bf16_as_bits, features),
        jnp.asarray(labels, jnp.int32),
        jnp.float32(lr),
        jnp.float32(weight_decay),
        jnp.float32(lr_decay_factor),
    )
    several = jax.process_count() > 1
    if several:  # the heads are split over the devices of every process: inputs become global arrays
        shardings = [NamedSharding(mesh, P('heads'))] * 3 + [NamedSharding(mesh, P())] * 5
        args = tuple(jax.tree.map(lambda a, sh=sh: parallel.global_array(a, sh), a) for a, sh in zip(args, shardings))
    params, losses = _train_program(
        head,
        *args,
        epochs=epochs,
        batch_size=batch_size,
        lr_decay_every=lr_decay_every,
        shuffle=shuffle,
        mesh=mesh,
    )
    if several:  # every process gets every head (process 0 writes them)
        params, losses = parallel.host_copy((params, losses))
    return jax.tree.map(lambda a: a[:m], params), losses[:m]


def ensemble_logits(head: nn.Module, params_stacked, features: Features):
    """Logits (M, N, S, S, K) of M stacked heads on shared features (array or activations dict); traceable.

    The members run one after another (`lax.map`), not vmapped: a member's hidden maps are the memory
    (the MLP's 2000 channels per pixel, 1.6 GB for 50 images at 64 px), so vmapping three members held
    three times that at once and a 3-head report of 100 images ran a 24 GB machine out of memory. The
    logits themselves are small (K channels)."""
    return jax.lax.map(lambda p: head.apply({'params': p}, features), params_stacked)


@functools.partial(jax.jit, static_argnums=0)
def predict(head: nn.Module, params_stacked, features: Features):
    """`ensemble_logits`, jitted (one compile per head module and feature shape)."""
    return ensemble_logits(head, params_stacked, features)
