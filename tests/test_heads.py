"""Few-shot heads: the paper's architectures, and many heads trained in one program (1 or 8 devices)."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO

from gsd import features as F
from gsd.nn import heads as H
from gsd.nn import layers

# Narrow widths keep the tests fast; the dilations, depth and activations are the paper's.
SMALL_CNN = H.CNNHead(3, embed_features=32, channels=(32,) * 6 + (16,))
EPOCHS, DECAY_EVERY = 100, 15
# Head 2 is a 2-shot head (images 3 and 1) among two 4-shot heads.
INDICES = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [3, 1, 0, 0]])
MASK = np.array([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0]], bool)


def stripes_problem(n=4, size=16, channels=12, classes=3, seed=0):
    """Labels in diagonal stripes; each pixel's features are its class's code plus noise."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.stack([(xx + s * yy) // 6 % classes for s in range(n)]).astype(np.int32)
    feats = np.eye(classes)[labels] @ rng.randn(classes, channels) + 0.5 * rng.randn(n, size, size, channels)
    return jnp.asarray(feats, jnp.float32), jnp.asarray(labels)


@pytest.fixture(scope='module')
def trained():
    """Two runs of one compiled program (lr and the decay factor are runtime values):
    'fit': constant lr 2e-3 for 100 epochs (the paper's 1e-3 needs its 1000 epochs);
    'short': lr 2e-3 for 15 epochs, then factor 0 freezes the heads. Long Adam runs amplify float
    rounding (a separately compiled loop drifts by up to ~1e-4 after 400 steps, vmap or not), so
    exact comparisons use the short run."""
    feats, labels = stripes_problem()
    keys = jax.random.split(jax.random.key(7), 3)
    run = lambda factor: H.train_heads(
        SMALL_CNN,
        keys,
        feats,
        labels,
        epochs=EPOCHS,
        lr=2e-3,
        weight_decay=1e-3,
        lr_decay_every=DECAY_EVERY,
        lr_decay_factor=factor,
        image_indices=INDICES,
        index_mask=MASK,
    )
    fit, short = run(1.0), run(0.0)
    return dict(feats=feats, labels=labels, keys=keys, fit=fit, short=short)


def test_cnn_is_the_papers():
    head = H.CNNHead(10, in_features=5056)
    params = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 8, 8, 5056)))['params']
    assert params['embed']['kernel'].shape == (5056, 128)
    kernels = [params[f'conv{i}']['kernel'].shape for i in range(8)]
    assert len(params) == 9 and all(k[:2] == (3, 3) for k in kernels)
    assert [k[3] for k in kernels] == [64, 64, 64, 64, 64, 64, 32, 10]
    assert [k[2] for k in kernels] == [128, 64, 64, 64, 64, 64, 64, 32]
    # 1x1 embed 5056*128+128, 3x3 convs 9*in*out+out: 647,296 + 73,792 + 5 * 36,928 + 18,464 + 2,890.
    assert H.param_count(params) == 927_082
    assert head.negative_slope == 0.01  # the authors' F.leaky_relu default
    # The dilations the program really runs, in order (XLA's conv; im2col is checked against it below).
    small = H.CNNHead(10, conv_impl='xla', remat=False)  # remat would hide the convs inside checkpoint calls
    x = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    jaxpr = jax.make_jaxpr(small.apply)(jax.eval_shape(small.init, jax.random.key(0), x), x)
    dil = [e.params['rhs_dilation'] for e in jaxpr.eqns if e.primitive.name == 'conv_general_dilated']
    assert dil == [(d, d) for d in (2, 4, 8, 1, 2, 4, 8, 1)]
    with pytest.raises(ValueError):
        jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 8, 8, 100)))


def test_cnn_receptive_field_is_61px_and_convs_agree():
    x = jax.random.normal(jax.random.key(1), (1, 71, 71, 2))
    heads = {impl: H.CNNHead(2, embed_features=4, channels=(4,) * 7, conv_impl=impl) for impl in layers.CONV_IMPLS}
    p = heads['im2col'].init(jax.random.key(2), x)
    g = np.abs(np.asarray(jax.jit(jax.grad(lambda x: heads['im2col'].apply(p, x)[0, 35, 35, 0]))(x)))
    rows, cols = np.nonzero(g.sum(axis=(0, 2, 3)))[0], np.nonzero(g.sum(axis=(0, 1, 3)))[0]
    # 1 + 2 * (2 + 4 + 8 + 1 + 2 + 4 + 8 + 1) = 61: pixels 5..65 around centre 35.
    assert (rows.min(), rows.max(), len(rows)) == (5, 65, 61)
    assert (cols.min(), cols.max(), len(cols)) == (5, 65, 61)
    # Same parameters, XLA's dilated conv: same logits, same size as the input.
    out = {impl: np.asarray(jax.jit(h.apply)(p, x)) for impl, h in heads.items()}
    assert out['xla'].shape == (1, 71, 71, 2)
    np.testing.assert_allclose(out['im2col'], out['xla'], rtol=0, atol=1e-5 * np.abs(out['xla']).max())


def test_mlp_is_the_papers():
    head = H.MLPHead(10, in_features=5056)
    params = jax.eval_shape(head.init, jax.random.key(0), jnp.zeros((1, 2, 2, 5056)))['params']
    assert [params[f'fc{i}']['kernel'].shape for i in range(3)] == [(5056, 2000), (2000, 200), (200, 10)]
    # 5056*2000+2000 + 2000*200+200 + 200*10+10
    assert H.param_count(params) == 10_516_210


def test_training_fits_and_seeds_differ(trained):
    params, losses = trained['fit']
    losses = np.asarray(losses)
    assert losses.shape == (3, EPOCHS) and np.isfinite(losses).all()
    assert (losses[:, -1] < 0.1 * losses[:, 0]).all(), losses[:, [0, -1]]
    logits = np.asarray(H.predict(SMALL_CNN, params, trained['feats']))
    assert logits.shape == (3, 4, 16, 16, 3)
    acc = (logits.argmax(-1) == np.asarray(trained['labels'])).mean(axis=(2, 3))  # (heads, images)
    assert (acc[:2] > 0.95).all(), acc
    assert (acc[2, [1, 3]] > 0.95).all(), acc  # the 2-shot head, on its own two images
    k0, k1 = np.asarray(params['conv3']['kernel'][0]), np.asarray(params['conv3']['kernel'][1])
    assert np.abs(k0 - k1).max() > 1e-2
    assert np.abs(logits[0] - logits[1]).max() > 1e-1


@functools.lru_cache(maxsize=None)
def _plain_step(head, weight_decay):
    @jax.jit
    def step(params, m, v, t, lr, x, y):
        def loss_fn(p):
            logits = head.apply({'params': p}, x)
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1))

        loss, g = jax.value_and_grad(loss_fn)(params)
        g = jax.tree.map(lambda g, p: g + weight_decay * p, g, params)
        m = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree.map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        params = jax.tree.map(
            lambda p, m, v: p - lr * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8), params, m, v
        )
        return params, m, v, loss

    return step


def _train_alone(head, key, feats, labels, images, epochs, lr, weight_decay, lr_decay_every, lr_decay_factor):
    """The recipe written out plainly, one jitted step per image from Python: torch.optim.Adam with
    weight_decay (L2 added to the gradient), one image per step in the given order, lr per epoch."""
    step = _plain_step(head, weight_decay)
    params = head.init(key, feats[:1])['params']
    m = jax.tree.map(jnp.zeros_like, params)
    v = jax.tree.map(jnp.zeros_like, params)
    t, epoch_losses = 0, []
    for e in range(epochs):
        lr_e = lr * lr_decay_factor ** (e // lr_decay_every)
        losses = []
        for i in images:
            t += 1
            params, m, v, loss = step(params, m, v, t, lr_e, feats[i : i + 1], labels[i : i + 1])
            losses.append(float(loss))
        epoch_losses.append(np.mean(losses))
    return params, np.array(epoch_losses)


def _max_diff(a, b):
    return max(
        float(np.abs(np.asarray(x) - np.asarray(y)).max())
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_head_in_the_program_equals_the_head_trained_alone(trained):
    params, losses = trained['short']
    losses = np.asarray(losses)
    feats, labels, keys = trained['feats'], trained['labels'], trained['keys']
    # Epochs 0..14 train, 15 on run at lr 0: the plain loop needs only those 16 epochs.
    schedule = dict(lr=2e-3, weight_decay=1e-3, lr_decay_every=DECAY_EVERY, lr_decay_factor=0.0)
    np.testing.assert_array_equal(
        losses[:, DECAY_EVERY + 1 :],
        np.repeat(losses[:, DECAY_EVERY : DECAY_EVERY + 1], EPOCHS - DECAY_EVERY - 1, axis=1),
    )
    for member, images in ((2, [3, 1]), (0, [0, 1, 2, 3])):
        alone, alone_losses = _train_alone(SMALL_CNN, keys[member], feats, labels, images, DECAY_EVERY + 1, **schedule)
        np.testing.assert_allclose(losses[member, : DECAY_EVERY + 1], alone_losses, rtol=1e-5, atol=1e-6)
        assert _max_diff(jax.tree.map(lambda a: a[member], params), alone) < 1e-5
    # The comparison sees the order of the images: the 2-shot head fed [1, 3] is another head.
    swapped, _ = _train_alone(SMALL_CNN, keys[2], feats, labels, [1, 3], DECAY_EVERY, **schedule)
    assert _max_diff(jax.tree.map(lambda a: a[2], params), swapped) > 1e-4


def random_activations(n=4, seed=3):
    """Per-layer maps at 4, 8, 16 and 32 px (out_size 16: three upsampled, one area-downsampled)."""
    rng = np.random.RandomState(seed)
    sizes = {'b4.conv1': (4, 5), 'b8.conv0': (8, 4), 'b16.conv1': (16, 3), 'b32.conv0': (32, 4)}
    acts = {k: jnp.asarray(rng.randn(n, r, r, c), jnp.float32) for k, (r, c) in sizes.items()}
    layout = F.FeatureLayout(tuple(sizes), tuple(c for _, c in sizes.values()), out_size=16)
    return acts, layout


def test_fused_first_layer_heads_equal_concat_heads():
    acts, layout = random_activations()
    feats = layout.concat(acts)
    labels = jnp.argmax(feats @ jax.random.normal(jax.random.key(4), (layout.channels, 3)), axis=-1)
    for make in (
        lambda **kw: H.CNNHead(3, embed_features=8, channels=(8,) * 7, **kw),
        lambda **kw: H.MLPHead(3, hidden=(16, 8), **kw),
    ):
        plain, fused = make(), make(first_layer_fused=True, layout=layout)
        p = plain.init(jax.random.key(5), feats)
        fused_shapes = jax.eval_shape(fused.init, jax.random.key(5), acts)
        assert jax.tree.map(jnp.shape, fused_shapes) == jax.tree.map(jnp.shape, p)  # interchangeable params
        ref = np.asarray(plain.apply(p, feats))
        np.testing.assert_allclose(np.asarray(fused.apply(p, acts)), ref, rtol=0, atol=1e-4 * np.abs(ref).max())
        with pytest.raises(TypeError):
            fused.apply(p, feats)
        with pytest.raises(TypeError):
            plain.apply(p, acts)
    # Training reads the activations dict: the MLP fits, and (short run, as above) equals the plain
    # loop on the concatenated features.
    plain, fused = H.MLPHead(3, hidden=(16, 8)), H.MLPHead(3, hidden=(16, 8), first_layer_fused=True, layout=layout)
    keys = jax.random.split(jax.random.key(6), 2)
    run = lambda k, factor: H.train_heads(
        fused, k, acts, labels, epochs=30, lr=1e-2, lr_decay_every=5, lr_decay_factor=factor
    )
    # Raw uint32 keys (M, 2) are the same keys as the typed ones.
    (fit, fit_losses), (short, short_losses) = run(keys, 1.0), run(jax.random.key_data(keys), 0.0)
    acc = (np.asarray(H.predict(fused, fit, acts)).argmax(-1) == np.asarray(labels)).mean(axis=(1, 2, 3))
    assert (acc > 0.95).all(), acc
    assert (np.asarray(fit_losses)[:, -1] < 0.1 * np.asarray(fit_losses)[:, 0]).all()
    alone, alone_losses = _train_alone(
        plain,
        keys[1],
        feats,
        labels,
        [0, 1, 2, 3],
        6,
        lr=1e-2,
        weight_decay=1e-3,
        lr_decay_every=5,
        lr_decay_factor=0.0,
    )
    np.testing.assert_allclose(np.asarray(short_losses)[1, :6], alone_losses, rtol=1e-5, atol=1e-6)
    assert _max_diff(jax.tree.map(lambda a: a[1], short), alone) < 1e-5


def test_ensemble_runs_members_in_turn():
    # Each member's logits are its own head's, and the members' hidden maps are not held at once: the
    # compiled program's scratch memory for 4 members is about that of 1 (vmapped members took 4x, and a
    # 3-head report of 100 images ran out of 24 GB).
    head = H.MLPHead(3, hidden=(256, 8))
    feats = jax.random.normal(jax.random.key(1), (4, 32, 32, 16))
    members = [head.init(jax.random.key(k), feats)['params'] for k in range(4)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *members)
    got = np.asarray(H.predict(head, stacked, feats))
    for m, p in enumerate(members):
        np.testing.assert_allclose(got[m], np.asarray(head.apply({'params': p}, feats)), rtol=1e-5, atol=1e-5)
    scratch = {}
    for m in (1, 4):
        some = jax.tree.map(lambda a, m=m: a[:m], stacked)
        compiled = jax.jit(lambda p, x: H.ensemble_logits(head, p, x)).lower(some, feats).compile()
        scratch[m] = compiled.memory_analysis().temp_size_in_bytes
    hidden_map = 4 * 32 * 32 * 256 * 4  # one member's first hidden layer, float32
    assert scratch[1] >= hidden_map, scratch
    assert scratch[4] < 1.5 * scratch[1], scratch


MULTI_DEVICE_SCRIPT = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from gsd.nn import heads as H
assert jax.device_count() == int(sys.argv[1]), jax.devices()
rng = np.random.RandomState(0)
labels = rng.randint(0, 3, (5, 8, 8)).astype(np.int32)
feats = (np.eye(3)[labels] @ rng.randn(3, 6) + 0.5 * rng.randn(5, 8, 8, 6)).astype(np.float32)
# 5 heads (padded to 8 on 8 devices), shot counts 5, 3, 1, 4, 2; batches of 2, shuffled each epoch.
idx = np.array([[0, 1, 2, 3, 4], [4, 2, 0, 0, 0], [1, 0, 0, 0, 0], [3, 2, 1, 0, 0], [2, 4, 0, 0, 0]])
mask = np.arange(5)[None] < np.array([5, 3, 1, 4, 2])[:, None]
head = H.MLPHead(3, hidden=(16, 8))
params, losses = H.train_heads(head, jax.random.split(jax.random.key(0), 5), feats, labels, epochs=8, lr=1e-2,
                               lr_decay_every=3, batch_size=2, image_indices=idx, index_mask=mask, shuffle=True)
k = np.asarray(params['fc1']['kernel'])
print(json.dumps({'losses': np.asarray(losses).tolist(), 'k_sum': np.abs(k).sum(axis=(1, 2)).tolist(),
                  'k0': k[:, 0, :4].tolist()}))
"""


def test_same_heads_on_one_and_eight_devices():
    results = {}
    for n in (1, 8):
        env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={n}', JAX_PLATFORMS='cpu')
        proc = subprocess.run(
            [sys.executable, '-c', MULTI_DEVICE_SCRIPT, str(n)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    one, many = results[1], results[8]
    assert np.array(one['losses']).shape == (5, 8)
    np.testing.assert_allclose(many['losses'], one['losses'], rtol=1e-5)
    np.testing.assert_allclose(many['k_sum'], one['k_sum'], rtol=1e-5)
    np.testing.assert_allclose(many['k0'], one['k0'], rtol=1e-5, atol=1e-6)
    assert len(set(np.round(one['k_sum'], 4))) == 5  # five different heads, not five copies


@pytest.mark.parametrize('dilation,slope', [(1, None), (2, 0.01), (4, 0.2)])
def test_taps_conv_and_its_backward_equal_xla(dilation, slope):
    x = jax.random.normal(jax.random.key(10), (2, 13, 11, 5))
    k = jax.random.normal(jax.random.key(11), (3, 3, 5, 4))
    g = jax.random.normal(jax.random.key(12), (2, 13, 11, 4))

    def xla(x, k):
        x = x if slope is None else jax.nn.leaky_relu(x, slope)
        return jax.lax.conv_general_dilated(
            x,
            k,
            (1, 1),
            ((dilation, dilation),) * 2,
            rhs_dilation=(dilation,) * 2,
            dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
            precision=jax.lax.Precision.HIGHEST,
        )

    taps = lambda x, k: layers.leaky_conv3x3_taps(x, k, dilation, slope)
    ref = np.asarray(xla(x, k))
    np.testing.assert_allclose(np.asarray(jax.jit(taps)(x, k)), ref, rtol=0, atol=1e-5 * np.abs(ref).max())
    grads = [jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) * g), argnums=(0, 1)))(x, k) for f in (taps, xla)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5 * np.abs(np.asarray(b)).max())


def test_cnn_gradients_equal_across_conv_impls():
    """The default CPU head (taps, activations folded into the next conv) trains as the plain one."""
    x = jax.random.normal(jax.random.key(13), (1, 24, 24, 6))
    y = jax.random.randint(jax.random.key(14), (1, 24, 24), 0, 3)
    make = lambda impl, remat: H.CNNHead(3, embed_features=8, channels=(8,) * 7, conv_impl=impl, remat=remat)
    p = make('xla', False).init(jax.random.key(15), x)

    def grads(head):
        loss = lambda p: optax_loss(head.apply(p, x), y)
        return jax.jit(jax.grad(loss))(p)

    ref = grads(make('xla', False))
    for impl, remat in (('taps', True), ('im2col', True), ('im2col', False), ('xla', True)):
        assert _max_diff(grads(make(impl, remat)), ref) < 1e-5 * max(
            np.abs(np.asarray(a)).max() for a in jax.tree.leaves(ref)
        )


def optax_loss(logits, y):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1))


def test_bfloat16_activations_train_as_float32():
    """Activations stored in bfloat16 (gsd.features.FeatureExtractor.stored_activations(dtype=...)):
    the head widens them and computes in float32, so training equals float32 training on the rounded
    values to float tolerance, and stays within 2% (losses) of training on the unrounded ones."""
    acts, layout = random_activations()
    half = {k: v.astype(jnp.bfloat16) for k, v in acts.items()}
    widened = {k: v.astype(jnp.float32) for k, v in half.items()}
    labels = jnp.argmax(layout.concat(acts) @ jax.random.normal(jax.random.key(4), (layout.channels, 3)), axis=-1)
    head = H.CNNHead(3, embed_features=8, channels=(8,) * 7, first_layer_fused=True, layout=layout)
    keys = jax.random.split(jax.random.key(16), 2)
    run = lambda a: H.train_heads(head, keys, a, labels, epochs=20, lr=1e-2)
    (p16, l16), (pw, lw), (_, l32) = run(half), run(widened), run(acts)
    np.testing.assert_allclose(np.asarray(l16), np.asarray(lw), rtol=1e-5, atol=1e-6)
    assert _max_diff(p16, pw) < 1e-5
    np.testing.assert_allclose(np.asarray(l16), np.asarray(l32), rtol=2e-2)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p16))
