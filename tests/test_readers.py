"""Safe checkpoint readers: fixture contents, hand-written legacy / TF / zip files, refusals and corrupt input."""

import collections
import json
import os
import pickle
import shutil
import subprocess
import zipfile

import numpy as np
import pytest
from conftest import FIXTURES
from writers import MARKER, FakeNetwork, Globals, Storage, Tensor, legacy_torch_file, tf_network, torch_globals

from gsd.stylegan2.readers import CheckpointError, read_checkpoint_file, read_pickle_file, read_torch_file

ROSINALITY_PT = FIXTURES / 'rosinality_public.pt'
NVIDIA_PKL = FIXTURES / 'nvidia_public.pkl'

ROSINALITY_SHAPES = {
    'style.1.weight': (64, 64),
    'style.1.bias': (64,),
    'style.2.weight': (64, 64),
    'style.2.bias': (64,),
    'input.input': (1, 512, 4, 4),
    'conv1.conv.weight': (1, 512, 512, 3, 3),
    'conv1.conv.modulation.weight': (512, 64),
    'conv1.conv.modulation.bias': (512,),
    'conv1.noise.weight': (1,),
    'conv1.activate.bias': (512,),
    'to_rgb1.bias': (1, 3, 1, 1),
    'to_rgb1.conv.weight': (1, 3, 512, 1, 1),
    'to_rgb1.conv.modulation.weight': (512, 64),
    'to_rgb1.conv.modulation.bias': (512,),
    **{f'noises.noise_{i}': (1, 1, r, r) for i, r in enumerate([4, 8, 8, 16, 16, 32, 32])},
}
for _i in range(6):
    ROSINALITY_SHAPES.update(
        {
            f'convs.{_i}.conv.weight': (1, 512, 512, 3, 3),
            f'convs.{_i}.conv.modulation.weight': (512, 64),
            f'convs.{_i}.conv.modulation.bias': (512,),
            f'convs.{_i}.noise.weight': (1,),
            f'convs.{_i}.activate.bias': (512,),
        }
    )
    if _i % 2 == 0:
        ROSINALITY_SHAPES[f'convs.{_i}.conv.blur.kernel'] = (4, 4)
for _i in range(3):
    ROSINALITY_SHAPES.update(
        {
            f'to_rgbs.{_i}.bias': (1, 3, 1, 1),
            f'to_rgbs.{_i}.upsample.kernel': (4, 4),
            f'to_rgbs.{_i}.conv.weight': (1, 3, 512, 1, 1),
            f'to_rgbs.{_i}.conv.modulation.weight': (512, 64),
            f'to_rgbs.{_i}.conv.modulation.bias': (512,),
        }
    )
CONV_WEIGHTS = ['conv1.conv.weight'] + [f'convs.{i}.conv.weight' for i in range(6)]


@pytest.fixture(scope='module')
def rosinality():
    return read_torch_file(ROSINALITY_PT)


@pytest.fixture(scope='module')
def nvidia():
    return read_pickle_file(NVIDIA_PKL)


@pytest.fixture
def g():
    return Globals()


def assert_error(path, *fragments, call=read_checkpoint_file):
    with pytest.raises(CheckpointError) as info:
        call(path)
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'{path}: '), message
    for fragment in fragments:
        assert fragment in message, message


# ---- fixtures ------------------------------------------------------------------------------------------------


def test_rosinality_g_ema_keys_and_shapes(rosinality):
    assert set(rosinality) == {'g', 'g_ema', 'latent_avg'}
    g_ema = rosinality['g_ema']
    assert len(g_ema) == 69 and set(g_ema) == set(ROSINALITY_SHAPES)
    for name, shape in ROSINALITY_SHAPES.items():
        assert g_ema[name].shape == shape and g_ema[name].dtype == np.float32, name
    assert rosinality['latent_avg'].shape == (64,)
    assert set(rosinality['g']) == set(g_ema)


def test_rosinality_shared_storage_views(rosinality):
    io_arrays = np.load(FIXTURES / 'rosinality_public_io.npz')
    g, g_ema = rosinality['g'], rosinality['g_ema']
    for name in CONV_WEIGHTS:  # g's view starts one element later in the same storage
        assert not np.array_equal(g[name], g_ema[name]), name
        np.testing.assert_array_equal(g[name].ravel()[:-1], g_ema[name].ravel()[1:])
    np.testing.assert_array_equal(
        g_ema['conv1.conv.weight'].ravel()[7919:], g_ema['convs.0.conv.weight'].ravel()[:-7919]
    )
    np.testing.assert_array_equal(g_ema['noises.noise_0'], io_arrays['noise/noise_0'])
    np.testing.assert_array_equal(rosinality['latent_avg'], io_arrays['latent_avg'])
    w = g_ema['conv1.conv.weight']
    assert w.flags.owndata and w.flags.writeable and w.flags.c_contiguous


def test_nvidia_pickle_matches_state_and_kwargs(nvidia):
    assert nvidia['format'] == 'nvidia-pytorch'
    assert set(nvidia['networks']) == {'G', 'D', 'G_ema'}
    assert nvidia['extra']['augment_pipe'] is None
    assert nvidia['extra']['training_set_kwargs']['resolution'] == 32
    g_ema = nvidia['networks']['G_ema']
    expected = np.load(FIXTURES / 'nvidia_public_state.npz')
    assert list(g_ema['state_dict']) == list(expected.files)
    for name in expected.files:
        got, want = g_ema['state_dict'][name], expected[name]
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes(), name
    kwargs = json.loads((FIXTURES / 'nvidia_public_kwargs.json').read_text())['G_init_kwargs']
    assert g_ema['init_kwargs'] == kwargs and type(g_ema['init_kwargs']['mapping_kwargs']) is dict
    assert g_ema['class_name'] == 'Generator' and nvidia['networks']['D']['class_name'] == 'Discriminator'
    assert 'b4.out.weight' in nvidia['networks']['D']['state_dict']


def test_read_checkpoint_file_sniffs_content(tmp_path):
    shutil.copy(NVIDIA_PKL, tmp_path / 'snapshot.pt')  # the extension lies; the content decides
    kind, result = read_checkpoint_file(tmp_path / 'snapshot.pt')
    assert kind == 'nvidia-pytorch' and set(result['networks']) == {'G', 'D', 'G_ema'}
    kind, arrays = read_checkpoint_file(FIXTURES / 'nvidia_public_state.npz')
    assert kind == 'npz' and len(arrays) == 75
    assert read_checkpoint_file(ROSINALITY_PT)[0] == 'torch'


# ---- hand-written files --------------------------------------------------------------------------------------


def test_legacy_torch_format_views_and_dtypes(g, tmp_path):
    rebuild, float_storage, bf16_storage, long_storage = torch_globals(g)
    floats = Storage(float_storage, '11', np.arange(12, dtype='<f4'))
    bf16_values = np.array([1.5, -2.0, 0.15625], np.float32)
    bf16 = Storage(bf16_storage, '22', (bf16_values.view(np.uint32) >> 16).astype('<u2'))
    longs = Storage(long_storage, '33', np.array([7, -8], '<i8'))
    view = Storage(float_storage, '11', floats.data, view=('44', 4, 8))  # a pre-1.0 storage view
    obj = collections.OrderedDict(
        window=Tensor(rebuild, floats, 2, (2, 3), (3, 1)),
        transposed=Tensor(rebuild, floats, 1, (3, 2), (1, 3)),
        bf16=Tensor(rebuild, bf16, 0, (3,), (1,)),
        scalar=Tensor(rebuild, longs, 1, (), ()),
        in_view=Tensor(rebuild, view, 1, (2,), (2,)),
        meta={'step': 3, 'names': ['a', 'b']},
    )
    path = tmp_path / 'legacy.pt'
    path.write_bytes(legacy_torch_file(g, obj, [floats, bf16, longs], ['11', '22', '33']))
    kind, got = read_checkpoint_file(path)
    assert kind == 'torch' and list(got) == list(obj)
    np.testing.assert_array_equal(got['window'], [[2, 3, 4], [5, 6, 7]])
    np.testing.assert_array_equal(got['transposed'], [[1, 4], [2, 5], [3, 6]])
    assert got['bf16'].dtype == np.float32
    np.testing.assert_array_equal(got['bf16'], bf16_values)
    assert got['scalar'].shape == () and got['scalar'] == -8 and got['scalar'].dtype == np.int64
    np.testing.assert_array_equal(got['in_view'], [5, 7])
    assert got['meta'] == {'step': 3, 'names': ['a', 'b']}
    assert all(a.flags.owndata and a.flags.writeable for k, a in got.items() if k != 'meta')


def test_legacy_tensor_beyond_its_storage(g, tmp_path):
    rebuild, float_storage, _, _ = torch_globals(g)
    floats = Storage(float_storage, '1', np.arange(6, dtype='<f4'))
    path = tmp_path / 'short.pt'
    path.write_bytes(legacy_torch_file(g, {'w': Tensor(rebuild, floats, 2, (2, 3), (3, 1))}, [floats], ['1']))
    assert_error(path, 'needs 32 bytes', 'holds 24')
    path.write_bytes(legacy_torch_file(g, {'w': Tensor(rebuild, floats, 0, (2,), (1,))}, [], []))
    assert_error(path, 'missing storage record')


def test_zip_untyped_storage_and_rebuild_v3(g, tmp_path):
    rebuild_v3 = g('torch._utils', '_rebuild_tensor_v3')
    untyped, float16 = g('torch.storage', 'UntypedStorage'), g('torch', 'float16')
    values = np.array([0.5, -1.0, 2.0, 65504.0], '<f2')
    data = Storage(untyped, '0', values.view(np.uint8))
    tensor = Tensor(rebuild_v3, data, 1, (3,), (1,), float16)
    pkl = g.dumps(
        {'h': tensor}, lambda x: ('storage', x.cls, x.key, 'cpu', x.data.size) if isinstance(x, Storage) else None
    )
    path = tmp_path / 'new.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('any_name/data.pkl', pkl)
        archive.writestr('any_name/byteorder', 'little')
        archive.writestr('any_name/data/0', values.tobytes())
    got = read_torch_file(path)
    assert got['h'].dtype == np.float16
    np.testing.assert_array_equal(got['h'], values[1:])


def test_tf_pickle_names_values_and_no_exec(g, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    network = g('dnnlib.tflib.network', 'Network', FakeNetwork)
    rng = np.random.default_rng(0)
    const, dense, rgb = (rng.standard_normal(s).astype(np.float32) for s in [(1, 8, 4, 4), (8, 8), (1, 1, 8, 3)])
    mapping = tf_network(
        network, 'G_mapping', 'G_mapping', [('Dense0/weight', dense), ('Dense0/bias', np.zeros(8, 'f4'))]
    )
    synthesis = tf_network(
        network,
        'G_synthesis',
        'G_synthesis_stylegan2',
        [
            ('4x4/Const/const', const),
            ('4x4/Conv/noise_strength', np.float32(0.25)),
            ('noise0', np.ones((1, 1, 4, 4), 'f4')),
            ('4x4/ToRGB/weight', rgb),
        ],
    )
    gs = tf_network(
        network,
        'Gs',
        'G_main',
        [('dlatent_avg', np.full(8, 0.5, 'f4'))],
        {'synthesis': synthesis, 'mapping': mapping},
        resolution=4,
        fmap_base=64,
    )
    d = tf_network(
        network,
        'D',
        'D_stylegan2',
        [('4x4/FromRGB/weight', rgb[:, :, ::-1].copy()), ('Output/weight', dense.T.copy())],
        resolution=4,
    )
    data = g.dumps((gs, d, gs))
    assert b'c_codecs\nencode' in data and b'cnumpy._core.multiarray' in data
    path = tmp_path / 'network-final.pkl'
    path.write_bytes(data.replace(b'cnumpy._core.multiarray', b'cnumpy.core.multiarray'))  # numpy 1.x spelling
    kind, result = read_checkpoint_file(path)
    assert kind == 'nvidia-tf' and set(result['networks']) == {'G', 'D', 'Gs'} and result['extra'] == {}
    net = result['networks']['Gs']
    assert net['class_name'] == 'G_main' and net['init_kwargs'] == {'resolution': 4, 'fmap_base': 64}
    assert list(net['state_dict']) == [
        'dlatent_avg',
        'G_synthesis/4x4/Const/const',
        'G_synthesis/4x4/Conv/noise_strength',
        'G_synthesis/noise0',
        'G_synthesis/4x4/ToRGB/weight',
        'G_mapping/Dense0/weight',
        'G_mapping/Dense0/bias',
    ]
    np.testing.assert_array_equal(net['state_dict']['G_synthesis/4x4/Const/const'], const)
    np.testing.assert_array_equal(net['state_dict']['G_mapping/Dense0/weight'], dense)
    noise_strength = net['state_dict']['G_synthesis/4x4/Conv/noise_strength']
    assert isinstance(noise_strength, np.ndarray) and noise_strength.shape == () and noise_strength == 0.25
    assert list(result['networks']['D']['state_dict']) == ['4x4/FromRGB/weight', 'Output/weight']
    np.testing.assert_array_equal(result['networks']['D']['state_dict']['4x4/FromRGB/weight'], rgb[:, :, ::-1])
    assert not (tmp_path / MARKER).exists()


def test_plain_pickle_is_not_a_network_pickle(tmp_path):
    path = tmp_path / 'plain.pkl'
    path.write_bytes(pickle.dumps({'weights': [1, 2, 3]}, protocol=4))
    assert_error(path, 'not a StyleGAN2 network pickle', "'weights'")


# ---- refusals: files that would run a command under plain pickle.load ------------------------------------------


class Run:
    def __init__(self, func, *args):
        self.reduced = (func, args)

    def __reduce__(self):
        return self.reduced


def check_refused(path, global_name):
    assert_error(path, f"refuses global '{global_name}'")
    assert not (path.parent / MARKER).exists()


def test_refuses_code_in_zip_torch_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'evil.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('evil/data.pkl', pickle.dumps({'w': Run(os.system, f'touch {MARKER}')}, protocol=2))
        archive.writestr('evil/data/0', b'\0' * 8)
    check_refused(path, f'{os.system.__module__}.system')
    assert_error(path, 'not allowed in a torch file', call=read_torch_file)


def test_refuses_code_in_network_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / 'evil.pkl'
    path.write_bytes(pickle.dumps({'G_ema': Run(exec, f'open({MARKER!r}, "w").close()')}))
    check_refused(path, 'builtins.exec')
    assert_error(path, "refuses global 'builtins.exec'", call=read_pickle_file)


def test_refuses_code_in_legacy_torch_file(g, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rebuild, float_storage, _, _ = torch_globals(g)
    floats = Storage(float_storage, '1', np.arange(4, dtype='<f4'))
    obj = {'w': Tensor(rebuild, floats, 0, (4,), (1,)), 'hook': Run(subprocess.Popen, ['touch', MARKER])}
    path = tmp_path / 'evil_legacy.pt'
    path.write_bytes(legacy_torch_file(g, obj, [floats], ['1']))
    check_refused(path, 'subprocess.Popen')


def test_refuses_other_format_globals_and_persistent_ids(g, tmp_path):
    network = g('dnnlib.tflib.network', 'Network', FakeNetwork)
    path = tmp_path / 'mixed.pkl'  # TF networks may not smuggle in torch rebuilders
    path.write_bytes(g.dumps([tf_network(network, 'G', 'G_main', []), Run(g('torch._utils', '_rebuild_tensor_v2'))]))
    assert_error(path, "refuses global 'torch._utils._rebuild_tensor_v2' (not allowed in a nvidia-tf file)")
    path = tmp_path / 'pid.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr(
            'a/data.pkl',
            g.dumps([Storage(None, '0', [])], lambda x: ('module', 'os', 'src') if isinstance(x, Storage) else None),
        )
    assert_error(path, 'refuses persistent id')


@pytest.mark.parametrize('target', [b'ctorch\nFloatStorage\n', b'ctorch._utils\n_rebuild_tensor_v2\n'])
def test_refuses_to_modify_allowed_globals(tmp_path, target):
    # PROTO 2, GLOBAL target, {'element': 'float64'}, BUILD: plain pickle would write into the shared object
    state = b'}X\x07\x00\x00\x00elementX\x07\x00\x00\x00float64s'
    path = tmp_path / 'tamper.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('tamper/data.pkl', b'\x80\x02' + target + state + b'b.')
    assert_error(path, 'refuses to set the state')


# ---- corrupt input -------------------------------------------------------------------------------------------


@pytest.mark.parametrize('source', [ROSINALITY_PT, NVIDIA_PKL], ids=['pt', 'pkl'])
@pytest.mark.parametrize('fraction', [0.5, 0.001])
def test_truncated_files(tmp_path, source, fraction):
    data = source.read_bytes()
    path = tmp_path / source.name
    path.write_bytes(data[: int(len(data) * fraction)])
    assert_error(path)
    assert_error(path, call=read_pickle_file if source.suffix == '.pkl' else read_torch_file)


def test_random_empty_missing_and_foreign_zip(tmp_path):
    random = tmp_path / 'random.pt'
    random.write_bytes(b'\x01' + np.random.default_rng(1).bytes(4096))
    assert_error(random, 'not a torch checkpoint')
    assert_error(random, call=read_torch_file)
    assert_error(random, call=read_pickle_file)
    empty = tmp_path / 'empty.pkl'
    empty.write_bytes(b'')
    assert_error(empty, 'empty file')
    for call in (read_torch_file, read_pickle_file):
        assert_error(empty, call=call)
        assert_error(tmp_path / 'missing.pt', 'no such file', call=call)
    assert_error(tmp_path / 'missing.pt', 'no such file')
    foreign = tmp_path / 'foreign.pt'
    with zipfile.ZipFile(foreign, 'w') as archive:
        archive.writestr('archive/weights.bin', b'\0' * 16)
    assert_error(foreign, 'no data.pkl')
    assert_error(foreign, 'no data.pkl', call=read_torch_file)
