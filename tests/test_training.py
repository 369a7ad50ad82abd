"""The training scaffold (gsd.training.loop) on a tiny model: resume, unreadable checkpoints, checkpoints
trained on other data, the NaN guard, config errors; and the fixed-shape batching of gsd.training.parallel."""

import json
import types

import flax
import grain.python as grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import errors
from gsd.io import sources
from gsd.training import loop, parallel

BATCH = 2


@flax.struct.dataclass
class State:
    step: jax.Array
    w: jax.Array


class Identity(grain.MapTransform):
    def map(self, record):
        return record


# Record i is the vector (i, i + 0.5): the final weights depend on which batches came in which order.
RECORDS = [np.array([i, i + 0.5], np.float32) for i in range(16)]


@jax.jit
def _update(state, x, poison):
    loss = jnp.mean((x - state.w) ** 2) * poison
    w = state.w + 0.1 * jnp.mean(x - state.w, axis=0)
    return state.replace(step=state.step + 1, w=w), {'loss': loss, 'finite': jnp.isfinite(loss)}


def train(directory, total_steps, *, trained_on=None, nan_at=None, log_every=2, checkpoint_every=2, keep=3):
    mesh = parallel.mesh()
    replicated = NamedSharding(mesh, P())
    init = jax.jit(lambda: State(step=jnp.zeros((), jnp.int32), w=jnp.zeros(2, jnp.float32)), out_shardings=replicated)

    def step(state, x, index):
        return _update(state, x, jnp.float32(np.nan if index == nan_at else 1.0))

    loader = sources.make_loader(RECORDS, BATCH, seed=3, transform=Identity())
    return loop.train(
        'toy',
        directory,
        mesh=mesh,
        loader=loader,
        init=init,
        step=step,
        total_steps=total_steps,
        batch_size=BATCH,
        log_every=log_every,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep,
        trained_on=trained_on or {'data': 'records', 'batch_size': BATCH},
    )


def w(finished):
    return np.asarray(finished.state.w)


@pytest.fixture(scope='module')
def straight(tmp_path_factory):
    """Six steps without a stop: the result every resumed run must reproduce."""
    return w(train(tmp_path_factory.mktemp('straight'), 6))


def test_resume_continues_state_and_data_order(tmp_path, straight, capsys):
    first = train(tmp_path, 4)
    assert first.resumed_from is None and int(first.state.step) == 4
    rows = [json.loads(line) for line in (tmp_path / 'tensorboard' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [2, 4] and all(np.isfinite(r['loss']) for r in rows)
    second = train(tmp_path, 6)
    assert second.resumed_from == 4 and 'toy: resumed from step 4' in capsys.readouterr().out
    np.testing.assert_array_equal(w(second), straight)
    assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [2, 4, 6]


def _damage(path, how):
    data = path.read_bytes()
    if how == 'truncate':
        path.write_bytes(data[: len(data) // 2])
    else:  # garble the middle third
        a, b = len(data) // 3, 2 * len(data) // 3
        path.write_bytes(data[:a] + bytes((x * 7 + 13) % 256 for x in data[a:b]) + data[b:])


@pytest.mark.parametrize(
    'item, how', [('state/_METADATA', 'garble'), ('state/manifest.ocdbt', 'truncate'), ('data', 'truncate')]
)
def test_unreadable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, straight, capsys, item, how):
    train(tmp_path, 6)
    capsys.readouterr()
    target = tmp_path / 'checkpoints' / '6' / item
    _damage(next(target.glob('*.json')) if target.is_dir() else target, how)  # data: the iterator's state

    again = train(tmp_path, 6)
    out = capsys.readouterr().out
    notes = [line for line in out.splitlines() if ' is unreadable ' in line]
    assert len(notes) == 1 and 'checkpoint 6' in notes[0] and 'resuming from step 4' in notes[0], out
    assert again.resumed_from == 4
    np.testing.assert_array_equal(w(again), straight)  # steps 5 and 6 trained again, on the same batches
    assert (tmp_path / 'unreadable_checkpoints' / '6').is_dir()
    assert train(tmp_path, 6).resumed_from == 6, 'step 6 was saved again, readable'


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path):
    train(tmp_path, 4)
    for step in (2, 4):
        _damage(tmp_path / 'checkpoints' / str(step) / 'state' / 'manifest.ocdbt', 'truncate')
    with pytest.raises(ValueError, match='no readable checkpoint') as error:
        train(tmp_path, 6)
    message = str(error.value)
    assert '\n' not in message and str(tmp_path / 'checkpoints') in message and 'step 4:' in message
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_checkpoints_trained_on_other_data_are_refused(tmp_path):
    record = {'data': 'records', 'shape': (2,), 'batch_size': BATCH}
    train(tmp_path, 2, trained_on=record)
    with pytest.raises(ValueError, match='trained on other data') as error:
        train(tmp_path, 4, trained_on={**record, 'data': 'other records'})
    message = str(error.value)
    assert isinstance(error.value, errors.GsdError), 'bad input: the command line prints it as one line'
    assert '\n' not in message and "data: 'records' then, 'other records' now" in message
    assert f'delete {tmp_path / "checkpoints"} or use a new workdir' in message
    # The same record resumes (its tuple, which JSON gives back as a list, is no difference).
    assert train(tmp_path, 4, trained_on=record).resumed_from == 2


def test_nan_guard_stops_before_logging_or_saving_a_non_finite_state(tmp_path):
    with pytest.raises(FloatingPointError, match='non-finite loss between steps 4 and 6') as error:
        train(tmp_path, 8, nan_at=4)  # index 4: the fifth step
    assert f'step 4 in {tmp_path / "checkpoints"}' in str(error.value)
    assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()) == [2, 4]
    rows = [json.loads(line) for line in (tmp_path / 'tensorboard' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [2, 4]
    # A save between log steps checks too: the bad state never becomes "the last good checkpoint".
    other = tmp_path / 'other'
    with pytest.raises(FloatingPointError, match='between steps 0 and 4'):
        train(other, 8, nan_at=2, log_every=8, checkpoint_every=2)
    assert sorted(int(p.name) for p in (other / 'checkpoints').iterdir()) == [2]


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match='^gan.batch_size: must be a positive multiple of the 2 devices, got 3$'):
        parallel.local_batch_size(3, 'gan.batch_size', types.SimpleNamespace(size=2))
    assert parallel.local_batch_size(4, 'gan.batch_size', types.SimpleNamespace(size=2)) == 4
    with pytest.raises(errors.SettingError, match='^autoshot.epochs: must be an integer >= 1, got 0$'):
        loop.require_positive({'autoshot.batch_size': 4, 'autoshot.epochs': 0})


def test_train_gan_checks_its_settings_before_building_anything(tmp_path):
    import importlib

    from gsd.pipeline import train_gan

    config = importlib.import_module('configs.toy_gan').get_config('smoke')
    with config.unlocked():
        config.gan.log_every = 0
    with pytest.raises(ValueError, match='gan.log_every: must be an integer >= 1'):
        train_gan.run(config, tmp_path)
    assert not any(tmp_path.iterdir())


def test_padded_batches_and_map_padded():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.arange(5)
    batches = list(parallel.padded_batches((x, y), 2))
    assert [count for _, count in batches] == [2, 2, 1]
    assert all(bx.shape == (2, 2) and by.shape == (2,) for (bx, by), _ in batches)
    np.testing.assert_array_equal(batches[-1][0][0], [[8, 9], [0, 0]])
    shapes = []

    def fn(bx, by):
        shapes.append(bx.shape)
        return bx * 2, {'sum': bx.sum(1) + by}

    doubled, extra = parallel.map_padded(fn, (x, y), 2)
    np.testing.assert_array_equal(doubled, x * 2)
    np.testing.assert_array_equal(extra['sum'], x.sum(1) + y)
    assert set(shapes) == {(2, 2)}
