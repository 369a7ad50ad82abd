"""Parity with the reference implementations: every case of the fixtures' io files, via `load`."""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXTURES, close, nchw

from gsd import stylegan2
from gsd.stylegan2.networks import layer_names


@functools.lru_cache(maxsize=None)
def _load(name, which='G_ema'):
    return stylegan2.load(FIXTURES / name, which, precision='highest')


@pytest.fixture(scope='module')
def nv_io():
    return dict(np.load(FIXTURES / 'nvidia_public_io.npz'))


@pytest.fixture(scope='module')
def ros_io():
    return dict(np.load(FIXTURES / 'rosinality_public_io.npz'))


NVIDIA_FILES = ['nvidia_public.pkl', 'nvidia_public_state.npz']


@pytest.mark.parametrize('fname', NVIDIA_FILES)
def test_nvidia_mapping_and_images(fname, nv_io):
    g, v = _load(fname)
    assert (g.resolution, g.channels, g.z_dim, g.w_dim, g.n_mlp) == (32, (128, 128, 128, 64), 64, 64, 2)
    z = jnp.asarray(nv_io['z'])
    close(v['buffers']['mapping']['w_avg'], nv_io['w_avg'])
    close(g.apply(v, z, method='map'), nv_io['ws_psi1'])
    close(g.apply(v, z, truncation_psi=0.7, method='map'), nv_io['ws_psi0.7'])
    close(g.apply(v, z, truncation_psi=0.5, truncation_cutoff=4, method='map'), nv_io['ws_psi0.5_cutoff4'])
    for ws_key, img_key, mode in [
        ('ws_psi1', 'img_psi1_const', 'const'),
        ('ws_psi0.7', 'img_psi0.7_const', 'const'),
        ('ws_psi0.5_cutoff4', 'img_psi0.5_cutoff4_const', 'const'),
        ('ws_psi1', 'img_psi1_none', 'none'),
        ('wplus', 'img_wplus_const', 'const'),
    ]:
        img = g.apply(v, jnp.asarray(nv_io[ws_key]), noise_mode=mode, method='synthesize')
        close(nchw(img), nv_io[img_key])
    # The full generator in one call (mapping, truncation, synthesis).
    close(nchw(g.apply(v, z, truncation_psi=0.7, noise_mode='const')), nv_io['img_psi0.7_const'])


@pytest.mark.parametrize('fname', NVIDIA_FILES)
def test_nvidia_activations_and_noise(fname, nv_io):
    g, v = _load(fname)
    for key in [k for k in nv_io if k.startswith('noise/')]:
        res, conv, _ = key.split('/')[1].split('.')[1:]  # noise/synthesis.b8.conv0.noise_const
        close(v['buffers']['synthesis'][res][conv]['noise_const'], nv_io[key], 0)
    _, acts = stylegan2.capture_activations(g, v, jnp.asarray(nv_io['ws_psi1']))
    assert set(layer_names(32)) <= set(acts)
    for name in layer_names(32):
        ref_name = f'synthesis.{name}'
        a = nchw(acts[name])
        close(a[:, :16], nv_io[f'act/{ref_name}'])
        close(a.mean(axis=(2, 3)), nv_io[f'actmean/{ref_name}'])
        close(a.std(axis=(2, 3)), nv_io[f'actstd/{ref_name}'])
    for r in (4, 8, 16, 32):
        close(nchw(acts[f'b{r}.rgb']), nv_io[f'blk_img/synthesis.b{r}'])


def test_rosinality_mapping_and_images(ros_io):
    g, v = _load('rosinality_public.pt')
    assert (g.resolution, g.channels, g.z_dim, g.n_mlp) == (32, (512,) * 4, 64, 2)
    z, z2 = jnp.asarray(ros_io['z']), jnp.asarray(ros_io['z2'])
    close(v['buffers']['mapping']['w_avg'], ros_io['latent_avg'])
    ws = g.apply(v, z, method='map')
    close(ws[:, 0], ros_io['w'])
    close(ws, ros_io['latent_trunc1'])
    close(nchw(g.apply(v, z)), ros_io['img_trunc1'])
    close(g.apply(v, z, truncation_psi=0.7, method='map'), ros_io['latent_trunc0.7'])
    close(nchw(g.apply(v, z, truncation_psi=0.7)), ros_io['img_trunc0.7'])
    close(nchw(g.apply(v, jnp.asarray(ros_io['wplus']), method='synthesize')), ros_io['img_wplus'])
    close(g.apply(v, z, mix_z=z2, mix_index=3, method='map'), ros_io['latent_mix_inject3'])
    close(nchw(g.apply(v, z, mix_z=z2, mix_index=3)), ros_io['img_mix_inject3'])
    noise = {name: ros_io[f'noise_custom/{i}'][:, 0] for i, name in enumerate(stylegan2.noise_layer_names(32))}
    close(nchw(g.apply(v, z, noise=noise)), ros_io['img_noise_custom'])


def test_rosinality_activations_and_noise(ros_io):
    g, v = _load('rosinality_public.pt')
    for i, name in enumerate(stylegan2.noise_layer_names(32)):
        res, conv = name.split('.')
        close(v['buffers']['synthesis'][res][conv]['noise_const'], ros_io[f'noise/noise_{i}'][0, 0], 0)
    _, acts = stylegan2.capture_activations(g, v, g.apply(v, jnp.asarray(ros_io['z']), method='map'))
    ours = {'conv1': 'b4.conv1', 'to_rgb1': 'b4.rgb'}
    for k, r in enumerate((8, 16, 32)):
        ours.update({f'convs.{2 * k}': f'b{r}.conv0', f'convs.{2 * k + 1}': f'b{r}.conv1', f'to_rgbs.{k}': f'b{r}.rgb'})
    for ref_name, name in ours.items():
        a = nchw(acts[name])
        close(a[:, :16], ros_io[f'act/{ref_name}'])
        close(a.mean(axis=(2, 3)), ros_io[f'actmean/{ref_name}'])
        close(a.std(axis=(2, 3)), ros_io[f'actstd/{ref_name}'])
    const = nchw(np.broadcast_to(v['params']['synthesis']['b4']['const'], (4, 4, 4, 512)))
    close(const[:, :16], ros_io['act/input'], 0)


def test_rosinality_g_is_not_g_ema(ros_io):
    g, v = _load('rosinality_public.pt', 'G')
    img = nchw(g.apply(v, jnp.asarray(ros_io['z']), truncation_psi=0.7))
    assert np.abs(img - ros_io['img_trunc0.7']).max() > 1.0


def test_nvidia_discriminator():
    d, v = _load('nvidia_public.pkl', 'D')
    io = np.load(FIXTURES / 'nvidia_public_D_io.npz')
    for x, y in [('x_img', 'd_img'), ('x_randn', 'd_randn')]:
        close(d.apply(v, jnp.asarray(io[x]).transpose(0, 2, 3, 1)), io[y])
