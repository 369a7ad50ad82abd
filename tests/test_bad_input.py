"""Bad input and faults: one line naming the file or setting, exit status 2, no traceback; nothing lost, overwritten
or half-written. The command line for what a user meets there (typos, missing inputs, a busy workdir, NaN weights),
the library for the rest (checkpoint metadata, unused tensors, label file names, output permissions)."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest
from conftest import FIXTURES, REPO
from PIL import Image

from gsd import errors, main, pipeline, stylegan2
from gsd.io import annotation, atomic, param_store
from gsd.pipeline import fewshot, shots
from gsd.stylegan2 import loading
from gsd.toy import CLASSES, PALETTE
from gsd.toy import world as toy_world

NVIDIA_NPZ = FIXTURES / 'nvidia_public_state.npz'
NVIDIA_PKL = FIXTURES / 'nvidia_public.pkl'
SAMPLES = str(REPO / 'configs' / 'samples.py') + ':smoke'
TOY = str(REPO / 'configs' / 'toy_1shot.py') + ':smoke'


def gsd_cli(*args, cwd=REPO):
    return subprocess.run(
        [sys.executable, '-m', 'gsd.main', *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def assert_one_line(proc, *fragments):
    """Exit status 2 and exactly one stderr line `gsd: ...` holding every fragment, no traceback."""
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith('gsd: '), lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def nvidia_state():
    return dict(np.load(NVIDIA_NPZ))


# ---- the command line ---------------------------------------------------------------------------------------


def test_stage_typo_fails_before_any_stage_runs(tmp_path):
    work = tmp_path / 'work'
    proc = gsd_cli(f'--config={SAMPLES}', f'--workdir={work}', '--config.stages=samples,fewshto')
    assert_one_line(proc, 'stages', "'fewshto'", 'known: samples')
    assert not work.exists(), 'the samples stage ran before the typo was noticed'


def test_empty_workdir_is_refused(tmp_path):
    cwd = tmp_path / 'cwd'
    cwd.mkdir()
    proc = gsd_cli(f'--config={SAMPLES}', '--workdir=', cwd=cwd)
    assert_one_line(proc, '--workdir', 'empty')
    assert not any(cwd.iterdir()), 'an empty --workdir wrote into the current directory'


@pytest.mark.parametrize(
    'args, fragments',
    [
        (['--config.samples.nmu=3'], ['--config.samples.nmu', 'no such setting']),
        (['--config.samples.num=abc'], ['--config.samples.num=abc']),
    ],
    ids=['unknown-setting', 'bad-value'],
)
def test_flag_errors_are_one_line(tmp_path, args, fragments):
    assert_one_line(gsd_cli(f'--config={SAMPLES}', f'--workdir={tmp_path}', *args), *fragments)


def test_busy_workdir_is_refused(tmp_path):
    fd = os.open(tmp_path / pipeline.LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f'{os.getpid()}\n'.encode())
        proc = gsd_cli(f'--config={SAMPLES}', f'--workdir={tmp_path}')
    finally:
        os.close(fd)
    assert_one_line(proc, f'{tmp_path}: another gsd run (pid {os.getpid()}) is using this workdir')
    assert not (tmp_path / 'samples').exists()


@pytest.mark.parametrize(
    'args, fragments',
    [
        (['--config.stages=shots,fewshot', '--config.fewshot.epochs=0'], ['fewshot.epochs', 'got 0']),
        (['--config.stages=autoshot_data'], ['heads', 'run the fewshot stage first']),
        (['--config.stages=segment', '--config.segment.input={tmp}/missing'], ['missing: no such folder']),
    ],
    ids=['fewshot-epochs', 'autoshot-data-without-heads', 'segment-missing-folder'],
)
def test_stage_input_errors(tmp_path, args, fragments):
    work = tmp_path / 'work'
    proc = gsd_cli(f'--config={TOY}', f'--workdir={work}', *[a.format(tmp=tmp_path) for a in args])
    assert_one_line(proc, *fragments)
    assert not (work / 'shots').exists()


def test_nan_weight_is_refused_by_name(tmp_path):
    state = nvidia_state()
    state['synthesis.b8.conv0.weight'][0, 0, 0, 0] = np.nan
    path = tmp_path / 'nan.npz'
    np.savez(path, **state)
    proc = gsd_cli(f'--config={SAMPLES}', f'--workdir={tmp_path / "work"}', f'--config.generator.checkpoint={path}')
    assert_one_line(proc, str(path), "'synthesis.b8.conv0.weight'", 'non-finite')
    assert not (tmp_path / 'work' / 'samples').exists()


# ---- what counts as bad input --------------------------------------------------------------------------------


def test_user_error_tells_bad_input_from_bugs(tmp_path, capsys):
    assert main.user_error(errors.SettingError('x.y: bad')) == 'x.y: bad'
    missing = tmp_path / 'nothing.txt'
    with pytest.raises(FileNotFoundError) as info:
        missing.read_text()
    assert main.user_error(info.value) == f'{missing}: No such file or directory'
    # A ValueError a `raise` in gsd's code raised is bad input; one raised inside JAX under jit, whose filtered
    # traceback ends at the gsd line that called it, is a bug; so is one raised outside gsd.
    source = (
        'import jax, jax.numpy as jnp\n'
        'def refuse():\n'
        "    raise ValueError('fewshot.x: bad')\n"
        'def crash():\n'
        '    return jax.jit(lambda x: jax.lax.pad(x, 0.0, [(1, 1, 0)] * 2))(jnp.ones(3))\n'
    )
    scope = {}
    exec(compile(source, str(REPO / 'gsd' / 'not_a_module.py'), 'exec'), scope)
    for fn, expected in [(scope['refuse'], 'fewshot.x: bad'), (scope['crash'], None)]:
        with pytest.raises(ValueError) as info:
            fn()
        assert main.user_error(info.value) == expected
    with pytest.raises(ValueError) as info:
        raise ValueError('from a test, not from gsd')
    assert main.user_error(info.value) is None
    # An error listing several files prints one line per file.
    assert main.report(annotation.AnnotationError([('a.png', 'bad'), ('b.png', 'worse')]))
    assert capsys.readouterr().err.splitlines() == ['gsd: a.png: bad', 'gsd: b.png: worse']


@pytest.mark.parametrize(
    'field, value',
    [('epochs', 0), ('ensemble', 0), ('batch_size', 0), ('lr', 0.0), ('lr', -1e-3), ('lr_decay_every', 0)],
)
def test_fewshot_settings_are_checked(field, value):
    from configs import toy_1shot

    config = toy_1shot.get_config('smoke')
    fewshot.check(config)
    with config.unlocked():
        config.fewshot[field] = value
    with pytest.raises(errors.SettingError, match=f'^fewshot.{field}: '):
        fewshot.check(config)


# ---- the workdir lock -----------------------------------------------------------------------------------------


def test_workdir_lock_is_exclusive_and_per_process_index(tmp_path, monkeypatch):
    with pipeline.workdir_lock(tmp_path) as held:
        assert held == tmp_path / '.gsd.lock'
        with pytest.raises(errors.WorkdirBusy, match=f'pid {os.getpid()}'):
            with pipeline.workdir_lock(tmp_path):
                pass
        # Process 1 of the same multi-process run locks its own file beside process 0's.
        monkeypatch.setattr(jax, 'process_index', lambda: 1)
        with pipeline.workdir_lock(tmp_path) as other:
            assert other == tmp_path / '.gsd.lock.1'
        monkeypatch.undo()
    with pipeline.workdir_lock(tmp_path):  # released when the run ends
        pass


# ---- checkpoints ----------------------------------------------------------------------------------------------


def test_non_finite_tensors_are_refused_used_or_not(tmp_path):
    state = nvidia_state()
    state['mapping.fc1.bias'][3] = np.inf
    np.savez(tmp_path / 'inf.npz', **state)
    with pytest.raises(stylegan2.LoadError, match=r"inf\.npz: .*'mapping\.fc1\.bias' holds 1 non-finite"):
        stylegan2.load(tmp_path / 'inf.npz')
    state = nvidia_state()
    state['synthesis.b8.resample_filter'] = np.full((4, 4), np.nan, np.float32)  # a buffer gsd does not read
    np.savez(tmp_path / 'filter.npz', **state)
    with pytest.raises(stylegan2.LoadError, match="'synthesis.b8.resample_filter' holds 16 non-finite"):
        stylegan2.load(tmp_path / 'filter.npz')


def test_nan_in_a_gsd_directory_is_refused(tmp_path):
    module, variables = stylegan2.load(NVIDIA_NPZ)
    variables = jax.tree.map(np.array, variables)
    variables['params']['synthesis']['b16']['torgb']['bias'][1] = np.nan
    out = stylegan2.save(tmp_path / 'model', {'G_ema': (module, variables)})
    with pytest.raises(stylegan2.LoadError, match=r"model/G_ema: tensor .*'b16'.*'torgb'.*'bias'.* non-finite"):
        stylegan2.load(out)


def test_unused_tensors_are_reported_and_recorded(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('error', loading.UnusedTensorWarning)
        _, provenance = stylegan2.read_networks(NVIDIA_PKL)  # its fixed resampling filters are not "unused"
    assert 'unused_tensors' not in provenance
    state = nvidia_state()
    state['extra.scale'] = np.ones(3, np.float32)
    np.savez(tmp_path / 'extra.npz', **state)
    with pytest.warns(loading.UnusedTensorWarning, match=r'extra\.npz: G_ema: ignored 1 tensor.*extra\.scale'):
        nets, provenance = stylegan2.read_networks(tmp_path / 'extra.npz')
    assert provenance['unused_tensors'] == {'G_ema': ['extra.scale']}
    kind, arch, variables = nets['G_ema']
    stylegan2.save(tmp_path / 'converted', {'G_ema': (loading.build(kind, arch), variables)}, provenance)
    meta = json.loads((tmp_path / 'converted' / 'gsd_stylegan2.json').read_text())
    assert meta['provenance']['unused_tensors'] == {'G_ema': ['extra.scale']}


def test_a_resampling_filter_gsd_does_not_implement_is_refused(tmp_path):
    state = nvidia_state()
    state['synthesis.b8.conv0.resample_filter'] = np.ones((4, 4), np.float32) / 16
    np.savez(tmp_path / 'box.npz', **state)
    with pytest.raises(stylegan2.LoadError, match="'synthesis.b8.conv0.resample_filter' is not the .1, 3, 3, 1."):
        stylegan2.load(tmp_path / 'box.npz')


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """A gsd checkpoint directory of the NVIDIA fixture's G_ema and D."""
    nets, provenance = stylegan2.read_networks(NVIDIA_PKL, only=('G_ema', 'D'))
    out = tmp_path_factory.mktemp('converted') / 'model'
    networks = {n: (loading.build(k, a), v) for n, (k, a, v) in nets.items() if n in ('G_ema', 'D')}
    return stylegan2.save(out, networks, provenance)


@pytest.mark.parametrize(
    'which, field, value, fragment',
    [
        ('G_ema', 'z_dim', 32, 'networks.G_ema.arch.z_dim is 32, but the weights in'),
        ('G_ema', 'n_mlp', 3, 'networks.G_ema.arch.n_mlp is 3, but the weights in'),
        ('G_ema', 'channels', [128, 128, 128, 32], 'networks.G_ema.arch.channels is [128, 128, 128, 32], but'),
        ('G_ema', 'resolution', 48, 'networks.G_ema.arch.resolution is 48; it must be a power of two'),
        ('G_ema', 'resolution', 64, 'networks.G_ema.arch.channels is [128, 128, 128, 64]; it must be a list of 5'),
        ('G_ema', 'w_dim', '64', "networks.G_ema.arch.w_dim is '64'; it must be a positive integer"),
        ('D', 'channels', [128, 128, 128, 32], 'networks.D.arch.channels is [128, 128, 128, 32], but'),
    ],
    ids=['z_dim', 'n_mlp', 'channels', 'resolution', 'resolution-vs-channels', 'w_dim-type', 'D-channels'],
)
def test_hand_edited_arch_names_the_file_and_field(tmp_path, converted, which, field, value, fragment):
    out = shutil.copytree(converted, tmp_path / 'model')
    meta_path = out / 'gsd_stylegan2.json'
    meta = json.loads(meta_path.read_text())
    meta['networks'][which]['arch'][field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(stylegan2.LoadError) as info:
        stylegan2.load(out, which)
    message = str(info.value)
    assert message.startswith(f'{meta_path}: ') and fragment in message and '\n' not in message, message


# ---- label files ----------------------------------------------------------------------------------------------


def _indexed(path, ids):
    img = Image.fromarray(ids.astype(np.uint8), 'L').convert('P')
    img.putpalette(np.asarray(PALETTE, np.uint8).reshape(-1).tolist())
    img.save(path, format='PNG')


def test_label_suffix_in_any_case(tmp_path):
    ids = np.random.default_rng(0).integers(0, len(CLASSES), (8, 8))
    _indexed(tmp_path / '00000.PNG', ids)
    skin = np.zeros((8, 8), np.uint8)
    skin[2:5, 2:5] = 255
    Image.fromarray(skin).save(tmp_path / '00001_skin.Png', format='PNG')
    labels = annotation.read_annotations(
        tmp_path, ['00000', '00001'], size=8, class_names=list(CLASSES), colours=PALETTE
    )
    assert np.array_equal(labels[0], ids) and labels[1].sum() == 9 * CLASSES.index('skin')
    _indexed(tmp_path / '00000.png', ids)
    if len(list(tmp_path.iterdir())) == 2:  # a case-insensitive file system holds only one of the two
        pytest.skip('case-insensitive file system')
    with pytest.raises(annotation.AnnotationError, match=r'00000\.(png|PNG): 00000\.(PNG|png) is the same label'):
        annotation.read_annotations(tmp_path, ['00000'], size=8, class_names=list(CLASSES), colours=PALETTE)


# ---- output permissions ---------------------------------------------------------------------------------------


def test_outputs_follow_the_umask(tmp_path):
    """Everything gsd writes atomically gets open()'s permissions (0666 / 0777 minus the umask), not mkstemp's
    private 0600 / 0700."""
    from configs import toy_1shot

    old = os.umask(0o027)
    try:
        atomic.write_json(tmp_path / 'a' / 'x.json', {'a': 1})
        with atomic.directory(tmp_path / 'd') as tmp:
            (tmp / 'f.txt').write_text('x')
        param_store.write(tmp_path / 'heads', {'w': np.ones(3, np.float32)}, {'heads.json': {}})
        annotation.write_colour_legend(tmp_path / 'legend' / 'classes.json', list(CLASSES), PALETTE)
        toy_world.write_image_folder(tmp_path / 'toy', 1, seed=0, size=16)
        stylegan2.save(tmp_path / 'model', {'G_ema': stylegan2.load(NVIDIA_NPZ)})
        config = toy_1shot.get_config('smoke')
        shots.run(config, tmp_path / 'work')
    finally:
        os.umask(old)
    wrong = [
        f'{oct(p.stat().st_mode & 0o777)} {p.relative_to(tmp_path)}'
        for p in [tmp_path / 'work', *tmp_path.rglob('*')]
        if p.stat().st_mode & 0o777 != (0o750 if p.is_dir() else 0o640)
    ]
    assert not wrong, wrong
    assert (tmp_path / 'work' / 'shots' / 'shots.json').exists()
    assert not [p for p in tmp_path.rglob('.*') if p.name != '.gsd.lock'], 'temporary files left behind'
