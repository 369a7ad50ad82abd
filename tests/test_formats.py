"""Every checkpoint format through `load`: TF pickles, plain torch state_dicts, rosinality discriminators, the
orbax converter, load errors; and the Generator / Discriminator API on small random models.

The format files are written here from the fixtures' weights (tests/writers.py), in each release's own names and
layouts, so the known fixture outputs must come back exactly.
"""

import functools
import hashlib
import json
import os
import pathlib
import re
import runpy
import shutil
import subprocess
import sys
import zipfile

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FIXTURES, REPO, TOL, close, nchw
from writers import Globals, write_tf_pickle, write_torch_zip

from gsd import stylegan2
from gsd.stylegan2.loading import build
from gsd.stylegan2.readers import read_pickle_file, read_torch_file

NVIDIA_NPZ = FIXTURES / 'nvidia_public_state.npz'
NVIDIA_PKL = FIXTURES / 'nvidia_public.pkl'
ROSINALITY_PT = FIXTURES / 'rosinality_public.pt'
CONVERTER = REPO / 'tools' / 'convert_checkpoint.py'


# ---- helpers -------------------------------------------------------------------------------------------------


# One compiled function per architecture (modules are hashable): the many files below holding the same network
# share it, and each function computes all the images a test compares (XLA compiles one big graph faster than
# several small ones).
@functools.lru_cache(maxsize=None)
def _generate_fn(module, psi):
    return jax.jit(lambda v, z: module.apply(v, z, truncation_psi=psi))


@functools.lru_cache(maxsize=None)
def _nvidia_fn(module):
    return jax.jit(lambda v, z, ws: (module.apply(v, z, truncation_psi=0.7), module.apply(v, ws, method='synthesize')))


@functools.lru_cache(maxsize=None)
def _discriminate_fn(module):
    return jax.jit(module.apply)


def generate(module, variables, z, psi):
    return nchw(_generate_fn(module, psi)(variables, jnp.asarray(z)))


def nvidia_images(module, variables, nv_io):
    """(image for z at psi 0.7, const noise; image for wplus), NCHW: the fixture's img_psi0.7_const, img_wplus_const."""
    return tuple(map(nchw, _nvidia_fn(module)(variables, jnp.asarray(nv_io['z']), jnp.asarray(nv_io['wplus']))))


def discriminate(module, variables, x_nchw):
    return np.asarray(_discriminate_fn(module)(variables, jnp.asarray(x_nchw).transpose(0, 2, 3, 1)))


@pytest.fixture(scope='module')
def nv_io():
    return dict(np.load(FIXTURES / 'nvidia_public_io.npz'))


@pytest.fixture(scope='module')
def d_io():
    return dict(np.load(FIXTURES / 'nvidia_public_D_io.npz'))


@pytest.fixture(scope='module')
def ros_io():
    return dict(np.load(FIXTURES / 'rosinality_public_io.npz'))


@pytest.fixture(scope='module')
def nv_state():
    return dict(np.load(NVIDIA_NPZ))


@pytest.fixture(scope='module')
def nv_pickle():
    return read_pickle_file(NVIDIA_PKL)['networks']


@pytest.fixture(scope='module')
def rosinality():
    return read_torch_file(ROSINALITY_PT)


def check_nvidia_g(module, variables, nv_io, tol=TOL):
    img, img_wplus = nvidia_images(module, variables, nv_io)
    for got in (img, img_wplus):
        assert np.isfinite(got).all()
    close(img, nv_io['img_psi0.7_const'], tol)
    close(img_wplus, nv_io['img_wplus_const'], tol)


def check_same_nvidia_g(module, variables, ref_variables, nv_io):
    """Same images as `ref_variables` (a training G, which has no reference images), and not G_ema's."""
    images = nvidia_images(module, variables, nv_io)
    for got, want in zip(images, nvidia_images(module, ref_variables, nv_io)):
        close(got, want)
    assert np.abs(images[0] - nv_io['img_psi0.7_const']).max() > 0.1


def check_nvidia_d(module, variables, d_io):
    assert module.resolution == 32
    close(discriminate(module, variables, d_io['x_img']), d_io['d_img'])
    close(discriminate(module, variables, d_io['x_randn']), d_io['d_randn'])


# ---- the releases' names, written from the NVIDIA state_dicts ------------------------------------------------


def _torch_conv(w):
    """torch [O, I, kh, kw] -> TF [kh, kw, I, O]."""
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def nvidia_to_tf_generator(state):
    """NVIDIA G state_dict -> TF StyleGAN2 Gs variables (Network.vars names): dense [in, out], conv [kh, kw, I, O],
    Conv0_up in correlation form (flipped), mod_bias stored minus 1, const [1, C, 4, 4], noise{i} [1, 1, R, R]."""
    used, tf = set(), {}

    def get(key):
        used.add(key)
        return state[key]

    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'synthesis\.b(\d+)\.', k)] if m)
    noise_names = stylegan2.noise_layer_names(resolution)
    tf['dlatent_avg'] = get('mapping.w_avg')
    n_mlp = len([k for k in state if re.fullmatch(r'mapping\.fc\d+\.weight', k)])
    for i in range(n_mlp):
        tf[f'G_mapping/Dense{i}/weight'] = np.ascontiguousarray(get(f'mapping.fc{i}.weight').T)
        tf[f'G_mapping/Dense{i}/bias'] = get(f'mapping.fc{i}.bias')
    tf['G_synthesis/4x4/Const/const'] = get('synthesis.b4.const')[None]
    for r in stylegan2.block_resolutions(resolution):
        for conv in ['conv1'] if r == 4 else ['conv0', 'conv1']:
            src = f'synthesis.b{r}.{conv}'
            dst = f'G_synthesis/{r}x{r}/' + ('Conv' if r == 4 else {'conv0': 'Conv0_up', 'conv1': 'Conv1'}[conv])
            weight = _torch_conv(get(f'{src}.weight'))
            if conv == 'conv0':
                weight = np.ascontiguousarray(weight[::-1, ::-1])
            tf[f'{dst}/weight'] = weight
            tf[f'{dst}/mod_weight'] = np.ascontiguousarray(get(f'{src}.affine.weight').T)
            tf[f'{dst}/mod_bias'] = get(f'{src}.affine.bias') - np.float32(1)
            tf[f'{dst}/noise_strength'] = get(f'{src}.noise_strength')
            tf[f'{dst}/bias'] = get(f'{src}.bias')
            tf[f'G_synthesis/noise{noise_names.index(f"b{r}.{conv}")}'] = get(f'{src}.noise_const')[None, None]
        src, dst = f'synthesis.b{r}.torgb', f'G_synthesis/{r}x{r}/ToRGB'
        tf[f'{dst}/weight'] = _torch_conv(get(f'{src}.weight'))
        tf[f'{dst}/mod_weight'] = np.ascontiguousarray(get(f'{src}.affine.weight').T)
        tf[f'{dst}/mod_bias'] = get(f'{src}.affine.bias') - np.float32(1)
        tf[f'{dst}/bias'] = get(f'{src}.bias')
    assert {k for k in state if k not in used} == {k for k in state if k.endswith('resample_filter')}
    return tf


def _nvidia_d_layers(state):
    """(resolution, [(nvidia prefix, block resolution, layer)]) of an NVIDIA D state_dict."""
    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'b(\d+)\.', k)] if m)
    layers = []
    for r in reversed(stylegan2.block_resolutions(resolution)[1:]):
        layers += [(f'b{r}.{n}', r, n) for n in (['fromrgb'] if r == resolution else []) + ['conv0', 'conv1', 'skip']]
    layers += [('b4.conv', 4, 'conv'), ('b4.fc', 4, 'fc'), ('b4.out', 4, 'out')]
    return resolution, layers


def nvidia_to_tf_discriminator(state):
    """NVIDIA D state_dict -> TF D variables: '{R}x{R}/FromRGB|Conv0|Conv1_down|Skip', '4x4/Conv', '4x4/Dense0',
    'Output'; conv [kh, kw, I, O] (the downsampling conv is correlation form in both), dense [in, out]."""
    _, layers = _nvidia_d_layers(state)
    names = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip', 'conv': 'Conv'}
    tf = {}
    for src, r, layer in layers:
        if layer in ('fc', 'out'):
            dst = '4x4/Dense0' if layer == 'fc' else 'Output'
            tf[f'{dst}/weight'] = np.ascontiguousarray(state[f'{src}.weight'].T)
        else:
            dst = f'{r}x{r}/{names[layer]}'
            tf[f'{dst}/weight'] = _torch_conv(state[f'{src}.weight'])
        if layer != 'skip':
            tf[f'{dst}/bias'] = state[f'{src}.bias']
    return tf


def nvidia_to_rosinality_discriminator(state):
    """NVIDIA D state_dict -> rosinality Discriminator.state_dict(): convs.0 = FromRGB ConvLayer (0: EqualConv2d,
    1: FusedLeakyReLU); convs.{i} = ResBlock (i = 1 at the highest resolution): conv1 (0 conv, 1 act),
    conv2 (0 blur, 1 conv, 2 act), skip (0 blur, 1 conv); final_conv (0 conv, 1 act); final_linear.{0,1}."""
    resolution, layers = _nvidia_d_layers(state)
    n_blocks = len(stylegan2.block_resolutions(resolution)) - 1
    blur = (np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64).astype(np.float32)
    out = {}
    for src, r, layer in layers:
        i = n_blocks - stylegan2.block_resolutions(resolution).index(r) + 1
        w, b = state[f'{src}.weight'], state.get(f'{src}.bias')
        if layer == 'fromrgb':
            out['convs.0.0.weight'], out['convs.0.1.bias'] = w, b
        elif layer == 'conv0':
            out[f'convs.{i}.conv1.0.weight'], out[f'convs.{i}.conv1.1.bias'] = w, b
        elif layer == 'conv1':
            out[f'convs.{i}.conv2.0.kernel'] = blur
            out[f'convs.{i}.conv2.1.weight'], out[f'convs.{i}.conv2.2.bias'] = w, b
        elif layer == 'skip':
            out[f'convs.{i}.skip.0.kernel'] = blur
            out[f'convs.{i}.skip.1.weight'] = w
        elif layer == 'conv':
            out['final_conv.0.weight'], out['final_conv.1.bias'] = w, b
        else:
            p = {'fc': 'final_linear.0', 'out': 'final_linear.1'}[layer]
            out[f'{p}.weight'], out[f'{p}.bias'] = w, b
    return out


@pytest.fixture(scope='module')
def tf_pickle(tmp_path_factory, nv_state, nv_pickle):
    """A TF StyleGAN2 (G, D, Gs) pickle of the NVIDIA fixture networks (G = the pickle's G, Gs = its G_ema)."""
    path = tmp_path_factory.mktemp('tf') / 'network-snapshot-000000.pkl'
    write_tf_pickle(
        path,
        {
            'G': nvidia_to_tf_generator(nv_pickle['G']['state_dict']),
            'D': nvidia_to_tf_discriminator(nv_pickle['D']['state_dict']),
            'Gs': nvidia_to_tf_generator(nv_state),
        },
    )
    return path


# ---- a. TensorFlow pickles -----------------------------------------------------------------------------------


def test_tf_pickle_generator_parity(tf_pickle, nv_io):
    data = tf_pickle.read_bytes()  # as the real files: protocol 4, dnnlib Networks, numpy 1.x array globals
    assert data[:2] == b'\x80\x04' and b'dnnlib.tflib.network' in data and b'numpy.core.multiarray' in data
    assert b'numpy._core' not in data
    g, v = stylegan2.load(tf_pickle)
    assert (g.resolution, tuple(g.channels), g.z_dim, g.w_dim, g.n_mlp) == (32, (128, 128, 128, 64), 64, 64, 2)
    close(v['buffers']['mapping']['w_avg'], nv_io['w_avg'], 0)
    check_nvidia_g(g, v, nv_io)
    nets, provenance = stylegan2.read_networks(tf_pickle)
    assert set(nets) == {'G', 'D', 'G_ema'} and provenance['source_format'] == 'tensorflow-pickle'
    assert 'w_avg_estimated' not in provenance


def test_tf_pickle_discriminator_parity(tf_pickle, d_io):
    check_nvidia_d(*stylegan2.load(tf_pickle, 'D'), d_io)


def test_tf_pickle_training_generator(tf_pickle, nv_io, nv_pickle):
    g, v = stylegan2.load(tf_pickle, 'G')
    g_ref, v_ref = stylegan2.load(NVIDIA_PKL, 'G')  # the same weights from NVIDIA's own pickle
    assert g == g_ref
    check_same_nvidia_g(g, v, v_ref, nv_io)


def test_tf_pickle_protocol_2_numpy_2_spelling(tmp_path, nv_state, nv_io):
    """The reader must not depend on how the pickle was written."""
    path = write_tf_pickle(tmp_path / 'gs.pkl', {'Gs': nvidia_to_tf_generator(nv_state)}, protocol=2, numpy1=False)
    assert b'cnumpy._core.multiarray\n_reconstruct' in path.read_bytes()
    g, v = stylegan2.load(path)
    check_nvidia_g(g, v, nv_io)


# ---- b. plain torch state_dicts -----------------------------------------------------------------------------


def test_torch_state_dict_nvidia_naming(tmp_path, nv_state, nv_io):
    path = write_torch_zip(tmp_path / 'G_ema.pt', dict(nv_state))
    with zipfile.ZipFile(path) as archive:
        assert {'archive/data.pkl', 'archive/version', 'archive/byteorder'} <= set(archive.namelist())
    g, v = stylegan2.load(path)
    check_nvidia_g(g, v, nv_io)
    _, provenance = stylegan2.read_networks(path)
    assert provenance['source_format'] == 'torch-state-dict' and 'w_avg_estimated' not in provenance


def test_torch_state_dict_rosinality_naming_without_latent_avg(tmp_path, rosinality, ros_io):
    path = write_torch_zip(tmp_path / 'g_ema.pt', rosinality['g_ema'])
    nets, provenance = stylegan2.read_networks(path)
    assert set(nets) == {'G_ema'}
    assert 'G_ema' in ' '.join(provenance['w_avg_estimated'])
    g, v = stylegan2.load(path)
    assert (g.resolution, tuple(g.channels), g.z_dim, g.n_mlp) == (32, (512,) * 4, 64, 2)
    w_avg = np.asarray(v['buffers']['mapping']['w_avg'])
    assert w_avg.shape == (64,) and np.isfinite(w_avg).all()
    assert not np.array_equal(w_avg, ros_io['latent_avg'])  # estimated, not read from somewhere
    # A mean of mapped z like the fixture's latent_avg (4096 z; |latent_avg| up to 1.9, w's std about 0.7 per
    # dimension, so the two means differ by about 0.013 per dimension): close, not equal.
    assert np.abs(w_avg - ros_io['latent_avg']).max() < 0.1
    close(generate(g, v, ros_io['z'], 1.0), ros_io['img_trunc1'])


# ---- c. rosinality train.py checkpoint with a discriminator ---------------------------------------------------


def test_rosinality_training_checkpoint_discriminator(tmp_path, rosinality, nv_pickle, d_io):
    d_state = nvidia_to_rosinality_discriminator(nv_pickle['D']['state_dict'])
    path = write_torch_zip(
        tmp_path / '000100.pt', {'g': rosinality['g'], 'd': d_state, 'g_ema': rosinality['g_ema'], 'ada_aug_p': 0.0}
    )
    check_nvidia_d(*stylegan2.load(path, 'D'), d_io)
    nets, provenance = stylegan2.read_networks(path)
    assert set(nets) == {'G', 'G_ema', 'D'} and provenance['source_format'] == 'rosinality-checkpoint'
    for which, key in (('G', 'g'), ('G_ema', 'g_ema')):  # each generator from its own key
        conv = nets[which][2]['params']['synthesis']['b4']['conv1']['weight']
        close(conv, rosinality[key]['conv1.conv.weight'][0].transpose(2, 3, 1, 0), 0)


# ---- d. the converter ---------------------------------------------------------------------------------------


@pytest.fixture(scope='module')
def convert():
    return runpy.run_path(str(CONVERTER), run_name='convert_checkpoint')['convert']


def sha256(path):
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def check_converted(out, src, networks, source_format, nv_io, d_io, ros_io):
    meta = json.loads((out / 'gsd_stylegan2.json').read_text())
    assert meta['format'] == 'gsd-stylegan2' and set(meta['networks']) == set(networks)
    assert meta['provenance']['source_format'] == source_format
    assert meta['provenance']['sha256'] == sha256(src)
    assert sorted(p.name for p in out.iterdir()) == sorted([*networks, 'gsd_stylegan2.json'])
    source_nets, _ = stylegan2.read_networks(src)
    for which in networks:
        module, variables = stylegan2.load(out, which)
        kind, arch, source_variables = source_nets[which]
        assert module == build(kind, arch)
        jax.tree.map(lambda a, b: close(a, b, 0), variables, source_variables)  # bit-exact round trip
        if which == 'D':
            check_nvidia_d(module, variables, d_io)
        elif src == ROSINALITY_PT:
            img = generate(module, variables, ros_io['z'], 1.0)
            if which == 'G_ema':
                close(img, ros_io['img_trunc1'])
            else:  # the training generator: no reference images, but not G_ema's
                close(img, generate(module, source_variables, ros_io['z'], 1.0))
                assert np.abs(img - ros_io['img_trunc1']).max() > 0.1
        elif which == 'G_ema':
            check_nvidia_g(module, variables, nv_io)
        else:
            check_same_nvidia_g(module, variables, source_variables, nv_io)


@pytest.mark.parametrize(
    'src, networks, source_format',
    [
        (ROSINALITY_PT, ('G_ema', 'G'), 'rosinality-checkpoint'),
        (NVIDIA_PKL, ('G_ema', 'G', 'D'), 'nvidia-pytorch-pickle'),
        (NVIDIA_NPZ, ('G_ema',), 'npz-state-dict'),
    ],
    ids=['rosinality', 'nvidia-pkl', 'npz'],
)
def test_converter(convert, tmp_path, src, networks, source_format, nv_io, d_io, ros_io):
    out = tmp_path / 'converted'
    written, chosen = convert(src, out)
    assert pathlib.Path(written) == out.absolute() and list(chosen) == list(networks)
    check_converted(out, src, networks, source_format, nv_io, d_io, ros_io)


def test_converter_command_line(tmp_path, nv_io):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]), JAX_PLATFORMS='cpu'
    )
    out = tmp_path / 'ffhq'
    run = subprocess.run(
        [sys.executable, str(CONVERTER), str(NVIDIA_NPZ), str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert str(out) in run.stdout
    meta = json.loads((out / 'gsd_stylegan2.json').read_text())
    assert meta['provenance']['sha256'] == sha256(NVIDIA_NPZ) and set(meta['networks']) == {'G_ema'}
    check_nvidia_g(*stylegan2.load(out), nv_io)
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(NVIDIA_PKL.read_bytes()[:1000])
    run = subprocess.run(
        [sys.executable, str(CONVERTER), str(bad), str(tmp_path / 'nothing')],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and str(bad) in run.stderr and 'Traceback' not in run.stderr, run.stderr
    assert not (tmp_path / 'nothing').exists()


def test_converter_replaces_output(convert, tmp_path, nv_io, d_io, ros_io):
    out = tmp_path / 'model'
    convert(NVIDIA_PKL, out)
    assert (out / 'D').is_dir()
    convert(NVIDIA_NPZ, out)
    check_converted(out, NVIDIA_NPZ, ('G_ema',), 'npz-state-dict', nv_io, d_io, ros_io)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model']  # no temporary directories left
    with pytest.raises(stylegan2.LoadError, match='has no D network'):
        stylegan2.load(out, 'D')


def assert_load_error(
    path, *fragments, which='G_ema', types=(stylegan2.LoadError, stylegan2.CheckpointError), shown=None
):
    """load(path, which) fails with one of `types`, one line, naming `shown` (default: path) and each fragment."""
    with pytest.raises(types) as info:
        stylegan2.load(path, which)
    message = str(info.value)
    assert '\n' not in message, message
    assert str(shown or path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_converted_directory_damage(convert, tmp_path):
    out = tmp_path / 'model'
    convert(NVIDIA_PKL, out)
    (out / 'gsd_stylegan2.json').write_text('{"format": "gsd-stylegan2", "networks": {')
    assert_load_error(out, 'gsd_stylegan2.json', types=stylegan2.LoadError)
    convert(NVIDIA_PKL, out)
    shutil.rmtree(out / 'D')
    assert_load_error(out, which='D', types=stylegan2.LoadError, shown=out / 'D')
    stylegan2.load(out, 'G_ema')  # the other networks still load


@pytest.mark.parametrize(
    'metadata',
    [
        '[]',
        '{"format": "gsd-stylegan2"}',
        '{"format": "gsd-stylegan2", "networks": []}',
        '{"format": "gsd-stylegan2", "version": 1, "networks": {"G_ema": {"kind": "G"}}}',
        '{"format": "gsd-stylegan2", "version": 1, "networks": {"G_ema": {"kind": "G", "arch": {"resolution": 32}}}}',
    ],
    ids=['list', 'no-networks', 'networks-list', 'no-arch', 'partial-arch'],
)
def test_converted_directory_bad_metadata(convert, tmp_path, metadata):
    out = tmp_path / 'model'
    convert(NVIDIA_NPZ, out)
    (out / 'gsd_stylegan2.json').write_text(metadata)
    assert_load_error(out, types=stylegan2.LoadError)


def test_converter_keeps_foreign_directory(convert, tmp_path):
    """OUT may be replaced only when it is gsd's own checkpoint: a directory with other files must survive."""
    out = tmp_path / 'thesis'
    out.mkdir()
    (out / 'chapter1.tex').write_text('precious')
    with pytest.raises((stylegan2.LoadError, FileExistsError)):
        convert(NVIDIA_NPZ, out)
    assert (out / 'chapter1.tex').read_text() == 'precious'


# ---- e. errors through load ---------------------------------------------------------------------------------


def test_error_truncated_pickle(tmp_path):
    path = tmp_path / 'network-snapshot.pkl'
    path.write_bytes(NVIDIA_PKL.read_bytes()[: NVIDIA_PKL.stat().st_size // 2])
    assert_load_error(path, 'truncated', types=stylegan2.CheckpointError)


@pytest.mark.parametrize(
    'name, shape',
    [
        ('synthesis.b16.conv1.weight', (128, 128, 1, 1)),
        ('synthesis.b8.conv0.affine.weight', (128, 32)),
        ('synthesis.b32.torgb.bias', (4,)),
        ('synthesis.b8.conv0.noise_const', (4, 4)),
        ('synthesis.b8.conv1.noise_strength', (2,)),
    ],
)
def test_error_npz_wrong_shape(tmp_path, nv_state, name, shape):
    path = tmp_path / 'state.npz'
    np.savez(path, **dict(nv_state, **{name: np.zeros(shape, np.float32)}))
    assert_load_error(path, repr(name), str(shape), types=stylegan2.LoadError)


@pytest.mark.parametrize(
    'name',
    [
        'synthesis.b8.conv0.affine.weight',
        'synthesis.b32.torgb.weight',
        'synthesis.b16.conv1.noise_strength',
        'mapping.fc1.weight',
    ],
)
def test_error_npz_missing_tensor(tmp_path, nv_state, name):
    path = tmp_path / 'state.npz'
    np.savez(path, **{k: v for k, v in nv_state.items() if k != name})
    assert_load_error(path, 'missing', repr(name), types=stylegan2.LoadError)


class _Run:
    def __init__(self, func, *args):
        self.reduced = (func, args)

    def __reduce__(self):
        return self.reduced


def test_error_code_in_torch_file(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pt'
    data_pkl = Globals().dumps({'synthesis.b4.const': _Run(os.system, f'touch {marker}')}, protocol=2)
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('archive/data.pkl', data_pkl)
        archive.writestr('archive/byteorder', 'little')
    assert_load_error(path, f"'{os.system.__module__}.system'", 'refuses', types=stylegan2.CheckpointError)
    assert not marker.exists()


def test_error_random_bytes(tmp_path):
    path = tmp_path / 'model.pt'
    path.write_bytes(b'\x13' + np.random.default_rng(5).bytes(10_000))
    assert_load_error(path, 'not a torch checkpoint', types=stylegan2.CheckpointError)


def test_error_directory_not_a_checkpoint(tmp_path):
    (tmp_path / 'weights').mkdir()
    (tmp_path / 'weights' / 'notes.txt').write_text('hello')
    assert_load_error(tmp_path / 'weights', 'gsd_stylegan2.json', types=stylegan2.LoadError)


def test_error_network_not_in_file():
    assert_load_error(NVIDIA_NPZ, 'has no D network', which='D', types=stylegan2.LoadError)


def test_error_tf_pickle_wrong_shape(tmp_path, nv_state):
    tf = nvidia_to_tf_generator(nv_state)
    tf['G_synthesis/16x16/Conv0_up/weight'] = np.zeros((1, 1, 128, 128), np.float32)
    path = write_tf_pickle(tmp_path / 'bad.pkl', {'Gs': tf})
    assert_load_error(path, "'G_synthesis/16x16/Conv0_up/weight'", '(1, 1, 128, 128)', types=stylegan2.LoadError)


# ---- f. the Generator / Discriminator API on small random models ---------------------------------------------


def rbg_key(seed):
    # The rbg generator compiles far faster on CPU than threefry; the models' behaviour does not depend on it.
    return jax.random.key(seed, impl='rbg')


def init_and_run(module, key, x):
    """(variables, module.apply(variables, x)) from ``module.init(key, x)``, compiled once per module."""
    return _init_and_run_fn(module)(key, x)


@functools.lru_cache(maxsize=None)
def _init_and_run_fn(module):
    return jax.jit(lambda key, x: (lambda v: (v, module.apply(v, x)))(module.init(key, x)))


def small_generator(resolution, channels):
    return stylegan2.Generator(resolution, channels, z_dim=16, w_dim=16, n_mlp=2)


@pytest.mark.parametrize('resolution, channels', [(4, (16,)), (8, (16, 8)), (64, (16, 8, 8, 8, 8))])
def test_generator_resolutions(resolution, channels):
    g = small_generator(resolution, channels)
    z = jax.random.normal(jax.random.PRNGKey(resolution), (2, 16))
    v, img = init_and_run(g, rbg_key(0), z)
    assert set(v) == {'params', 'buffers'}
    assert v['params']['synthesis'][f'b{resolution}']['torgb']['weight'].shape == (channels[-1], 3)
    assert v['buffers']['synthesis'][f'b{resolution}']['conv1']['noise_const'].shape == (resolution, resolution)
    assert img.shape == (2, resolution, resolution, 3) and img.dtype == jnp.float32
    assert bool(jnp.isfinite(img).all()) and float(jnp.std(img)) > 0


def _param_count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_generator_1024_config_f_shapes():
    g = stylegan2.Generator(1024, stylegan2.channels_nvidia(1024))
    z = jnp.zeros((1, 512))
    variables, img = jax.eval_shape(lambda: (lambda v: (v, g.apply(v, z)))(g.init(jax.random.PRNGKey(0), z)))
    assert img.shape == (1, 1024, 1024, 3)
    n = _param_count(variables['params'])
    assert 28e6 < n < 31e6, n
    assert _param_count(variables['params']['mapping']) == 8 * (512 * 512 + 512)
    assert set(variables['buffers']['synthesis']) == {f'b{r}' for r in stylegan2.block_resolutions(1024)}


def test_channel_rules():
    assert stylegan2.channels_rosinality(256, 2) == stylegan2.channels_nvidia(256) == (512,) * 5 + (256, 128)
    assert stylegan2.channels_nvidia(1024)[-1] == 32 and stylegan2.channels_rosinality(1024, 2)[-1] == 32
    assert stylegan2.channels_rosinality(256, 1) == (512,) * 4 + (256, 128, 64)


def test_crop_rows_512():
    g = stylegan2.Generator(512, stylegan2.channels_nvidia(512), crop_rows=(64, 448))
    z = jnp.zeros((2, 512))
    img = jax.eval_shape(lambda: g.apply(g.init(jax.random.PRNGKey(0), z), z))
    assert img.shape == (2, 384, 512, 3)


def test_load_crop_rows():
    g, v = stylegan2.load(NVIDIA_NPZ, crop_rows=(8, 24))
    assert g.crop_rows == (8, 24)
    assert jax.eval_shape(lambda: g.apply(v, jnp.zeros((2, 64)))).shape == (2, 16, 32, 3)


@pytest.fixture(scope='module')
def noisy_model():
    """A random 8 px model whose noise strengths are not zero (init makes them zero), and 3 z."""
    g = small_generator(8, (16, 8))
    v, _ = init_and_run(g, rbg_key(0), jax.random.normal(jax.random.PRNGKey(8), (2, 16)))  # compiled already
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: jnp.full_like(x, 0.5) if 'noise_strength' in jax.tree_util.keystr(path) else x, v['params']
    )
    return g, dict(v, params=params), jax.random.normal(jax.random.PRNGKey(7), (3, 16))


def test_noise_modes(noisy_model):
    g, v, z = noisy_model

    @jax.jit
    def run(v, z, key1, key2):
        return [
            g.apply(v, z, noise_mode='const'),
            g.apply(v, z, noise_mode='none'),
            g.apply(v, z, noise_mode='random', rngs={'noise': key1}),
            g.apply(v, z, noise_mode='random', rngs={'noise': key2}),
        ]

    with pytest.raises(flax.errors.InvalidRngError, match='noise'):  # 'random' needs rngs={'noise': key}
        jax.eval_shape(lambda: g.apply(v, z, noise_mode='random'))
    with pytest.raises(ValueError, match='noise_mode'):
        jax.eval_shape(lambda: g.apply(v, z, noise_mode='bogus'))
    const, none, a, b = run(v, z, rbg_key(1), rbg_key(2))
    for img in (const, none, a, b):
        assert img.shape == (3, 8, 8, 3) and bool(jnp.isfinite(img).all())
    np.testing.assert_array_equal(a, run(v, z, rbg_key(1), rbg_key(3))[2])  # a key decides the noise
    assert float(jnp.abs(a - b).max()) > 1e-3
    assert float(jnp.abs(a - const).max()) > 1e-3
    assert float(jnp.abs(none - const).max()) > 1e-3


@pytest.mark.parametrize('batch', [1, 3])
def test_fused_modconv_equal(noisy_model, batch):
    g, v, z = noisy_model
    run = jax.jit(lambda v, z: [g.clone(fused_modconv=f).apply(v, z) for f in (True, False, None)])
    images = run(v, z[:batch])
    assert images[0].shape == (batch, 8, 8, 3)
    close(images[0], images[1])
    close(images[0], images[2])


def test_bfloat16_close_to_float32(nv_io):
    g16, v16 = stylegan2.load(NVIDIA_NPZ, dtype=jnp.bfloat16)
    assert g16.dtype == jnp.bfloat16
    img16 = generate(g16, v16, nv_io['z'], 0.7)
    assert img16.dtype == np.float32 and np.isfinite(img16).all()
    close(img16, nv_io['img_psi0.7_const'], 0.1)  # the float32 output, which matches it within 1e-4


def test_capture_activations_names(noisy_model):
    g, v, z = noisy_model
    run = jax.jit(lambda v, z: stylegan2.capture_activations(g, v, g.apply(v, z, method='map')))
    images, acts = run(v, z)
    names = stylegan2.layer_names(8)
    assert names == ['b4.conv1', 'b4.torgb', 'b8.conv0', 'b8.conv1', 'b8.torgb']
    assert set(names) <= set(acts)
    assert acts['b8.conv1'].shape == (3, 8, 8, 8) and acts['b4.torgb'].shape == (3, 4, 4, 3)
    close(acts['b8.rgb'], images, 0)


@pytest.mark.parametrize('resolution, channels', [(4, (16,)), (8, (16, 8))])
def test_discriminator_small(resolution, channels):
    d = stylegan2.Discriminator(resolution, channels)
    x = jax.random.normal(jax.random.PRNGKey(3), (4, resolution, resolution, 3))
    v, logits = init_and_run(d, rbg_key(0), jnp.concatenate([x, x[::-1]]))
    assert logits.shape == (8, 1) and bool(jnp.isfinite(logits).all())
    # minibatch stddev pools every (N/G)-th sample: with x then x reversed both pools hold x0..x3, so each sample
    # must get the same logit in both halves
    close(logits[:4], logits[4:][::-1])
    assert float(jnp.std(logits[:4])) > 0
