"""gsd.nn.unet: any-size output, overfitting one image, 1 vs 8 devices, soft vs integer targets, Plateau."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO

from gsd.nn import unet

# conv_impl 'xla' and rbg keys: both compile several times faster on XLA:CPU (the CPU default,
# im2col, only pays off inside the training scans, which these tests barely run).
TINY = dict(base_width=4, depth=2, norm_groups=2, conv_impl='xla')


@pytest.fixture(scope='module')
def tiny():
    model = unet.UNet(3, **TINY)
    tx = unet.default_optimizer()
    return model, tx, unet.create_state(model, tx, jax.random.key(0, impl='rbg'))


def _toy_image(size=32):
    """An image and its 3-class labels: background, a bright disc, a dark square."""
    yy, xx = np.mgrid[:size, :size]
    lab = np.zeros((size, size), np.int32)
    lab[(yy - 10) ** 2 + (xx - 11) ** 2 < 36] = 1
    lab[20:28, 16:27] = 2
    img = np.stack(
        [np.array([90, 120, 60], np.uint8), np.array([240, 220, 200], np.uint8), np.array([20, 40, 160], np.uint8)]
    )[lab]
    return img, lab


def test_any_size_output(tiny):
    model, _, state = tiny
    images = np.random.default_rng(0).integers(0, 256, (3, 50, 70, 3), dtype=np.uint8)
    logits = unet.predict(model, state.params, images, batch_size=2)
    assert logits.shape == (3, 50, 70, 3) and logits.dtype == np.float32 and np.isfinite(logits).all()
    labels = unet.predict(model, state.params, images[0], output='labels')
    assert labels.shape == (50, 70) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, logits[0].argmax(-1))


def test_overfits_one_image():
    img, lab = _toy_image()
    small = dict(TINY, base_width=8, norm_groups=4)
    params = unet.train_simple(
        img[None],
        lab[None],
        num_classes=3,
        steps=200,
        batch_size=1,
        seed=0,
        augment=False,
        chunk=200,
        lr=3e-3,
        rng_impl='rbg',
        **small,
    )
    pred = unet.predict(unet.UNet(3, **small), params, img, output='labels')
    assert (pred == lab).mean() > 0.95


def test_soft_targets_match_integer_targets_and_lr_scale(tiny):
    model, tx, state = tiny
    img, lab = _toy_image(16)
    images, labels = np.stack([img, img[::-1]]), np.stack([lab, lab[::-1]])
    target_logits = (100.0 * np.eye(3)[labels]).astype(np.float16)
    # The steps donate their state. A host round trip copies without compiling; the sharding must stay
    # the replicated one that create_state and the step give, or the step compiles again.
    copy = lambda s: jax.device_put(jax.device_get(s), s.lr_scale.sharding)
    key = jax.random.key(2)
    hard_step = unet.make_train_step(model, tx)
    soft_step = unet.make_train_step(model, tx, soft=True)
    _, m_soft = soft_step(copy(state), images, target_logits, key)
    s1, m_hard = hard_step(copy(state), images, labels, key)
    assert abs(float(m_soft['loss']) - float(m_hard['loss'])) < 1e-5
    assert float(m_soft['accuracy']) == float(m_hard['accuracy'])
    # lr scale 0 freezes the params (Adam's moments still move) and does not recompile.
    frozen = unet.set_lr_scale(s1, 0.0)
    before = jax.tree.map(np.asarray, frozen.params)
    s2, _ = hard_step(frozen, images, labels, key)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, s2.params), before)
    assert hard_step._cache_size() == 1 and int(s2.step) == 2


def test_plateau():
    p = unet.Plateau(patience=2, factor=0.1, mode='max')
    scales = [p.update(s) for s in (0.5, 0.6, 0.6, 0.55, 0.6, 0.59, 0.7, 0.7, 0.7, 0.7)]
    assert scales == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01])
    q = unet.Plateau(patience=0, mode='min')
    assert [q.update(s) for s in (2.0, 1.0, 1.5)] == pytest.approx([1, 1, 0.1])


MULTI_DEVICE_SCRIPT = r"""
import functools, sys
import jax
jax.config.update('jax_num_cpu_devices', 8)
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from gsd import augment
from gsd.nn import unet
from gsd.training import parallel

assert jax.device_count() == 8, jax.devices()
model = unet.UNet(3, base_width=4, depth=1, norm_groups=2, conv_impl='xla')   # depth 1: half the compile
tx = unet.default_optimizer()
state0 = jax.device_get(unet.create_state(model, tx, jax.random.key(0, impl='rbg')))
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
labels = rng.integers(0, 3, (8, 16, 16)).astype(np.int32)
aug = functools.partial(augment.augment, flip_permutation=augment.swap_permutation(3, [(1, 2)]))
out = []
for devices in (jax.devices()[:1], jax.devices()):
    mesh = parallel.mesh(devices)
    state = jax.device_put(state0, NamedSharding(mesh, P()))
    x, y = jax.device_put((images, labels), NamedSharding(mesh, P('data')))
    state, m = unet.make_train_step(model, tx, mesh, augment_fn=aug)(state, x, y, jax.random.key(3))
    out.append((float(m['loss']), jax.tree.map(np.asarray, state.params)))
(l1, p1), (l8, p8) = out
assert abs(l1 - l8) < 1e-5, (l1, l8)
err = max(jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p8)))
assert err < 1e-5, err
print('ok', l1, l8, err)
"""


def test_one_vs_eight_devices_same_step():
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    proc = subprocess.run(
        [sys.executable, '-c', MULTI_DEVICE_SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith('ok')


def test_balanced_class_weights_and_weighted_loss():
    w = unet.balanced_class_weights([900, 100, 0], power=1.0)
    # share^-1 for the seen classes, scaled to weigh 1 per pixel on average; the unseen class gets the largest.
    np.testing.assert_allclose(w[:2], [1 / 0.9 / 2, 1 / 0.1 / 2], rtol=1e-6)
    assert w[2] == w[1] and 0.9 * w[0] + 0.1 * w[1] == pytest.approx(1.0)
    assert unet.balanced_class_weights([900, 100, 0], power=0.0) == (1.0, 1.0, 1.0)
    logits = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    labels = jax.random.randint(jax.random.key(1), (2, 4, 4), 0, 3)
    plain = unet.pixel_loss(logits, labels, soft=False)
    np.testing.assert_allclose(
        unet.pixel_loss(logits, labels, soft=False, class_weights=(1.0, 1.0, 1.0)), plain, rtol=1e-6
    )
    # A weighted loss is the weighted mean of the per-pixel cross-entropies; soft one-hot targets agree.
    ce = np.asarray(-jax.nn.log_softmax(logits)[..., None].squeeze(-1))
    per_pixel = np.take_along_axis(ce, np.asarray(labels)[..., None], -1)[..., 0]
    cw = np.array([0.5, 2.0, 3.0])
    expected = (per_pixel * cw[np.asarray(labels)]).sum() / cw[np.asarray(labels)].sum()
    got = unet.pixel_loss(logits, labels, soft=False, class_weights=tuple(cw))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    onehot = jax.nn.one_hot(labels, 3)
    np.testing.assert_allclose(unet.pixel_loss(logits, onehot, soft=True, class_weights=tuple(cw)), got, rtol=1e-5)
