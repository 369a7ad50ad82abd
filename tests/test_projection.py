"""Projection on a tiny random generator (recovery, batch independence, one compile, noise maps) and the
perceptual losses (LPIPS against a NumPy transcription of the lpips package, weight files, errors)."""

import collections

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from writers import write_torch_zip

from gsd import projection as P
from gsd.io.images import to_uint8
from gsd.stylegan2.networks import Generator, channels_nvidia, noise_layer_names
from gsd.stylegan2.readers import CheckpointError

STEPS = 150
NOISE_STRENGTH = 0.03
# Measured after 150 steps on the fixture's 3 images, seeds 0 and 10: PSNR gains over the w_avg image of
# 14.8-19.3 dB ('w') and 14.8-18.2 dB ('w+'); |w - w_true| 6-10% of |w_avg - w_true| ('w').
MIN_GAIN_DB = 10.0
MAX_W_ERROR_RATIO = 0.35


@pytest.fixture(scope='module')
def tiny():
    """Random 16 px generator and 3 images it generated. A random generator's raw images overshoot [-1, 1]
    far (std ~1.2), so uint8 targets would be clipped out of its reach: its ToRGB weights are scaled by 0.4
    (image std ~0.5, as a trained generator's). Small noise strengths make the noise maps matter, a little."""
    G = Generator(16, channels_nvidia(16, 256, 16), z_dim=16, w_dim=16, n_mlp=2)
    # Filled in NumPy from the shapes as G.init would (weights, const and noise N(0, 1), mapping weights
    # N(0, 1) / lr_mul, biases 0, affine biases 1), which spares compiling G.init.
    rng = np.random.RandomState(0)

    def init(path, leaf):
        name = jax.tree_util.keystr(path)
        if 'noise_strength' in name:
            return np.full(leaf.shape, NOISE_STRENGTH, np.float32)
        if 'bias' in name or 'w_avg' in name:
            return np.full(leaf.shape, 1.0 if 'affine' in name else 0.0, np.float32)
        scale = 0.4 if 'torgb' in name and 'affine' not in name else 1.0
        if 'mapping' in name:
            scale = 1 / G.mapping_lr_mul  # stored / lr_mul, scaled back at run time
        return (scale * rng.randn(*leaf.shape)).astype(np.float32)

    shapes = jax.eval_shape(G.init, jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    v = jax.tree_util.tree_map_with_path(init, shapes)

    @jax.jit
    def targets_and_start(v, z):
        ws = G.apply(v, z, method='map')
        w_avg, _ = P.w_statistics(G, v, 10000)
        images = G.apply(v, jnp.concatenate([ws, jnp.broadcast_to(w_avg, ws.shape)]), method='synthesize')
        return ws, w_avg, images[:3], images[3:]

    ws, w_avg, targets, start = targets_and_start(v, np.random.RandomState(7).randn(3, 16).astype(np.float32))
    targets, start = to_uint8(targets), to_uint8(start)
    return G, v, np.asarray(ws), targets, P.psnr(start, targets), np.asarray(w_avg)


@pytest.fixture(scope='module')
def programs():
    """The CPU (host) loop's three programs, jitted afresh from the library's functions as `gsd.projection` jits
    them, each allowed a single trace: projections that differ only in traced values (space, lr, seeds, targets
    of one shape) must share them."""
    chex.clear_trace_counter()
    return {
        '_init_program': jax.jit(chex.assert_max_traces(P._init, n=1), static_argnames=P._STATIC),
        '_step_program': jax.jit(
            chex.assert_max_traces(P._step, n=1), static_argnames=P._STEP_STATIC, donate_argnums=3
        ),
        '_finish_program': jax.jit(chex.assert_max_traces(P._finish, n=1), static_argnames=P._FINISH_STATIC),
    }


def _use(programs, monkeypatch):
    assert jax.default_backend() == 'cpu'  # loop='auto' then runs the host loop, the one these programs replace
    for name, program in programs.items():
        monkeypatch.setattr(P, name, program)


@pytest.fixture(scope='module')
def projected_w(tiny, programs):
    G, v, _, targets, _, _ = tiny
    with pytest.MonkeyPatch.context() as monkeypatch:
        _use(programs, monkeypatch)
        return P.project(G, v, targets[:2], steps=STEPS, space='w')


def test_projection_recovers_generated_images_w(tiny, projected_w):
    _, _, ws, targets, start, w_avg = tiny
    r = projected_w
    assert r.ws.shape == (2,) + ws.shape[1:] and r.images.shape == (2, 16, 16, 3) and r.images.dtype == np.uint8
    assert r.psnr.shape == r.loss.shape == (2,) and r.loss_history.shape == (STEPS, 2)
    np.testing.assert_array_equal(r.ws, np.broadcast_to(r.ws[:, :1], r.ws.shape))  # one w per image
    assert np.all(r.psnr - start[:2] >= MIN_GAIN_DB), (start, r.psnr)
    assert np.all(r.loss < r.loss_history[0])
    error, start_error = (np.abs(w - ws[:2]).mean(axis=(1, 2)) for w in (r.ws, w_avg))
    assert np.all(error < MAX_W_ERROR_RATIO * start_error), (error, start_error)


def test_w_plus_shares_the_program(tiny, projected_w, programs, monkeypatch):
    G, v, _, targets, start, _ = tiny
    _use(programs, monkeypatch)  # a second trace of any of them raises
    r = P.project(G, v, targets[:2], steps=STEPS, space='w+', lr=0.05)  # other space and lr: same program
    assert not np.allclose(r.ws[:, 0], r.ws[:, -1])
    assert np.all(r.psnr - start[:2] >= MIN_GAIN_DB), (start, r.psnr)


def test_images_are_independent(tiny, projected_w, programs, monkeypatch):
    """Image 0 projects the same whatever image shares its batch (gradients never mix), in the same program."""
    G, v, _, targets, _, _ = tiny
    _use(programs, monkeypatch)
    r = P.project(G, v, targets[[0, 2]], steps=STEPS, seed=[0, 5])
    np.testing.assert_allclose(r.ws[0], projected_w.ws[0], atol=1e-6)
    for name, n in r.noise.items():
        np.testing.assert_allclose(n[0], projected_w.noise[name][0], atol=1e-6)
    assert r.psnr[0] == pytest.approx(projected_w.psnr[0])
    assert not np.allclose(r.ws[1], projected_w.ws[1])


def test_noise_maps_stay_normalised(tiny, projected_w):
    G = tiny[0]
    assert sorted(projected_w.noise) == sorted(noise_layer_names(G.resolution))
    for name, n in projected_w.noise.items():
        r = int(name.split('.')[0][1:])
        assert n.shape == (2, r, r)
        np.testing.assert_allclose(n.mean(axis=(1, 2)), 0.0, atol=1e-5)
        np.testing.assert_allclose(n.var(axis=(1, 2)), 1.0, atol=1e-4)


def test_schedule_and_regularizer():
    # lr: 0 at the first step, full after 5%, half way down the cosine at 87.5%, ~0 at the end.
    f = np.asarray(jax.jit(P._lr_factor)(np.float32([0, 0.025, 0.05, 0.5, 0.875, 0.999]), 0.05, 0.25))
    np.testing.assert_allclose(f[:5], [0, 0.5, 1, 1, 0.5], atol=1e-6)
    assert 0 < f[5] < 1e-3
    # A constant map's autocorrelation is 1 per shift and level: 16x16 -> levels 16 and 8, 2 shifts each.
    ones = {'b16.conv0': np.ones((1, 16, 16), np.float32)}
    assert float(jax.jit(P.noise_regularizer)(ones)[0]) == pytest.approx(4.0)


def test_psnr_and_pixel_loss():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] += 1
    p = P.psnr(a, b)
    assert p[0] == np.inf and p[1] == pytest.approx(20 * np.log10(255.0))
    with pytest.raises(ValueError):
        P.psnr(a.astype(np.float32), b)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    y = x.copy()
    y[1] += 0.1
    loss = P.PixelPyramidLoss()
    d = np.asarray(loss(x, y))
    # A constant shift lives in the coarsest level (8 px) alone: the band-pass levels cancel it.
    assert d[0] == 0.0 and d[1] == pytest.approx(0.1, rel=1e-4)
    assert len(loss.features(x)) == 3  # bands at 32 and 16 px, then the 8 px image


# ---- LPIPS ------------------------------------------------------------------------------------------------

TINY_VGG = (4, 4, 6, 6, 8, 8, 8, 8, 8, 8, 8, 8, 8)  # out channels of features.0, 2, 5, ..., 28


def fake_lpips_state(seed=0):
    rng = np.random.RandomState(seed)
    vgg, lin, cin = collections.OrderedDict(), collections.OrderedDict(), 3
    for idx, cout in zip([i for tap in P.VGG16_TAPS for i in tap], TINY_VGG):
        vgg[f'features.{idx}.weight'] = (rng.randn(cout, cin, 3, 3) / np.sqrt(9 * cin)).astype(np.float32)
        vgg[f'features.{idx}.bias'] = (0.1 * rng.randn(cout)).astype(np.float32)
        cin = cout
    vgg['classifier.0.weight'] = rng.randn(5, 7).astype(np.float32)  # torchvision's file has more: ignored
    for k, tap in enumerate(P.VGG16_TAPS):
        c = vgg[f'features.{tap[-1]}.weight'].shape[0]
        lin[f'lin{k}.model.1.weight'] = np.abs(rng.randn(1, c, 1, 1)).astype(np.float32)
    return vgg, lin


def lpips_numpy(vgg, lin, a, b):
    """The lpips package's forward (torch layout, NCHW), transcribed in NumPy."""

    def feats(x):
        shift, scale = (np.reshape(c, (1, 3, 1, 1)) for c in (P.LPIPS_SHIFT, P.LPIPS_SCALE))
        x = (x.transpose(0, 3, 1, 2) - shift) / scale
        out = []
        for k, tap in enumerate(P.VGG16_TAPS):
            if k:
                n, c, h, w = x.shape
                x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
            for i in tap:
                xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
                win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # n c h w 3 3
                x = np.einsum('nchwij,ocij->nohw', win, vgg[f'features.{i}.weight'])
                x = np.maximum(x + vgg[f'features.{i}.bias'][None, :, None, None], 0)
            out.append(x / (np.sqrt(np.sum(x**2, axis=1, keepdims=True)) + 1e-10))
        return out

    total = 0
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        total = total + np.einsum('nchw,c->nhw', (fa - fb) ** 2, lin[f'lin{k}.model.1.weight'].reshape(-1)).mean((1, 2))
    return total


@pytest.fixture(scope='module')
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp('lpips')
    vgg, lin = fake_lpips_state()
    np.savez(d / 'both.npz', **vgg, **lin)
    write_torch_zip(d / 'vgg16.pth', vgg)
    write_torch_zip(d / 'vgg.pth', lin)
    return d, vgg, lin


def test_lpips_matches_reference_and_is_a_distance(lpips_files):
    d, vgg, lin = lpips_files
    loss = P.LPIPS.from_files(d / 'both.npz', precision=jax.lax.Precision.HIGHEST)
    x, y = (np.random.RandomState(s).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32) for s in (1, 2))
    dxy, dyx, dxx = (np.asarray(loss(a, b)) for a, b in ((x, y), (y, x), (x, x)))
    assert dxy.shape == (2,)
    assert np.all(np.abs(dxx) < 1e-12)  # not exactly 0: XLA may round the two feature passes differently
    assert np.all(dxy > 0)
    np.testing.assert_allclose(dxy, dyx, rtol=1e-6)
    np.testing.assert_allclose(dxy, lpips_numpy(vgg, lin, x.astype(np.float64), y.astype(np.float64)), rtol=1e-4)
    # The torch-format files give the same loss.
    from_torch = P.make_perceptual('lpips', d / 'vgg16.pth', d / 'vgg.pth')
    np.testing.assert_allclose(np.asarray(from_torch(x, y)), dxy, rtol=1e-5)


def test_lpips_area_downsamples_large_images(lpips_files, monkeypatch):
    loss = P.LPIPS.from_files(lpips_files[0] / 'both.npz')
    x, y = (np.random.RandomState(s).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32) for s in (3, 4))
    monkeypatch.setattr(P, 'LPIPS_MAX_SIZE', 16)
    pooled = [a.reshape(1, 16, 2, 16, 2, 3).mean(axis=(2, 4)) for a in (x, y)]
    np.testing.assert_allclose(np.asarray(loss(x, y)), np.asarray(loss(*pooled)), rtol=1e-5)


def test_lpips_file_errors(lpips_files, tmp_path):
    d, vgg, lin = lpips_files
    with pytest.raises(ValueError, match='vgg16-397923af.pth'):
        P.make_perceptual('lpips')
    corrupt = tmp_path / 'vgg16-397923af.pth'
    corrupt.write_bytes(b'PK\x03\x04 not really a zip archive' * 3)
    missing_lin = tmp_path / 'only_vgg.npz'
    np.savez(missing_lin, **vgg)
    bad_shape = tmp_path / 'bad_lin.pth'
    write_torch_zip(bad_shape, {**lin, 'lin2.model.1.weight': np.ones((1, 5, 1, 1), np.float32)})
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes((d / 'vgg16.pth').read_bytes()[:300])
    # (arguments, the file the message must name, the problem it must state)
    cases = [
        ((corrupt,), corrupt, 'corrupt'),
        ((tmp_path / 'absent.pth',), tmp_path / 'absent.pth', 'no such file'),
        ((missing_lin,), missing_lin, "missing tensor 'lin0.model.1.weight'"),
        (
            (d / 'vgg16.pth', bad_shape),
            bad_shape,
            "'lin2.model.1.weight' has shape (1, 5, 1, 1), expected (1, 8, 1, 1)",
        ),
        ((truncated, d / 'vgg.pth'), truncated, 'corrupt'),
    ]
    for args, path, problem in cases:
        with pytest.raises(CheckpointError) as e:
            P.LPIPS.from_files(*args)
        msg = str(e.value)
        assert '\n' not in msg and msg.startswith(f'{path}: ') and problem in msg, msg


def test_scan_and_host_loops_agree(tiny):
    """The one-program scan (accelerators) and the host-driven step (CPU default) are the same optimisation."""
    G, v, _, targets, _, _ = tiny
    a = P.project(G, v, targets[:2], steps=12, space='w+', loop='scan')
    b = P.project(G, v, targets[:2], steps=12, space='w+', loop='host')
    np.testing.assert_allclose(a.ws, b.ws, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-4, atol=1e-6)
    for k in a.noise:
        np.testing.assert_allclose(a.noise[k], b.noise[k], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match='loop'):
        P.project(G, v, targets[:1], steps=2, loop='sideways')
