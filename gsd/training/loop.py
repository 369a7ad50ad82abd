"""The training scaffold: the loop over steps that every trainer runs with its own step function,
schedule and export (`gsd.pipeline.train_gan`, `gsd.pipeline.autoshot`).

`train` owns what a resumable data-parallel training run needs besides the maths:
* checkpoints (`Checkpoints`): an orbax CheckpointManager whose steps hold the train state, the grain
  iterator's position (a resumed run reads the same batches as an uninterrupted one), a `trained_on`
  record and the trainer's JSON items; saves are asynchronous and run on the trainer's schedule.
  A rerun restores the latest checkpoint (or initialises), refuses checkpoints trained on other data
  or settings, and passes over unreadable ones to the previous kept one;
* batches from the grain iterator placed on the mesh (each process contributes its local slice);
* metric sums kept on device, read by the host only at log steps, with a `finite` flag: the NaN guard
  stops the run before a non-finite state is logged or saved;
* SIGTERM: the run stops at the next step boundary and the save in flight commits (`gsd.training.stop`);
* TensorBoard events, metrics.jsonl and a progress line with rate and ETA (`gsd.training.metrics`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import json
import logging
import pathlib
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import grain.python as grain
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gsd import errors
from gsd.training import metrics as metrics_lib
from gsd.training import stop


def fingerprint(value) -> str:
    """A short stable hash of a JSON-able value (key order does not matter)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def require_positive(settings: Mapping[str, Any]) -> None:
    """A SettingError (a ValueError) naming the first setting ({'gan.log_every': value}) that is not an
    integer >= 1: a loop's schedule divides by these."""
    for name, value in settings.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise errors.SettingError(f'{name}: must be an integer >= 1, got {value!r}')


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else ''
    return f'{type(error).__name__}: {line[:200]}'


@contextlib.contextmanager
def _quiet_failed_reads():
    # A failed orbax read leaves tensorstore futures whose errors asyncio logs and Python reports as
    # unraisable ("Event loop is closed"), one page each; the one line Checkpoints prints says it all.
    log = logging.getLogger('asyncio')
    level, hook = log.level, sys.unraisablehook
    dropped = []
    log.setLevel(logging.CRITICAL)
    sys.unraisablehook = lambda _: dropped.append(None)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        # The other reads of the failed restore report from tensorstore's threads over the next
        # moments: wait until they have gone quiet (0.2 s), at most 5 s.
        deadline, seen, quiet = time.monotonic() + 5.0, -1, 0
        while quiet < 4 and time.monotonic() < deadline:
            gc.collect()
            quiet, seen = (quiet + 1, seen) if len(dropped) == seen else (0, len(dropped))
            time.sleep(0.05)
        raise
    finally:
        gc.collect()
        # After a failed read the quieting stays for the rest of the process: on a loaded machine the
        # abandoned futures can still report after the wait above (seen in CI: a page at exit).
        if not failed:
            log.setLevel(level)
            sys.unraisablehook = hook


class CheckpointError(errors.GsdError, ValueError):
    """A checkpoint directory this run cannot resume from: '<directory>: <why>'."""


class StaleCheckpointError(CheckpointError):
    """The checkpoints in a directory were trained on other data or settings than this run's."""


class Checkpoints:
    """directory/<step>/ for each kept step: `state` (orbax StandardSave), `data` (the grain iterator),
    `trained_on` (JSON: what the state was trained on) and one JSON item per name in `json_items`."""

    def __init__(self, directory, *, name: str, keep: int, trained_on: Mapping, json_items: Sequence[str] = ()):
        import orbax.checkpoint as ocp  # imported here: orbax takes a while to import

        self.ocp = ocp
        self.directory = pathlib.Path(directory)
        self.name = name
        # As it reads back from JSON (tuples become lists), so a comparison sees only real differences.
        self.trained_on = json.loads(json.dumps(dict(trained_on), default=str))
        self.json_items = tuple(json_items)
        # Directories made before the items are written: grain's iterator handler writes each process's
        # file at once, and with orbax's asynchronous directory creation process k > 0 could write before
        # process 0 had made the step's folder (seen with 2 processes: FileNotFoundError, then a hang).
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            async_options=ocp.options.AsyncOptions(create_directories_asynchronously=False),
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> Optional[int]:
        return self.manager.latest_step()

    def save(self, step: int, state, data_iter, json_values: Mapping[str, Any]) -> None:
        """Start an asynchronous save of step `step` (the iterator's position is taken now)."""
        ocp = self.ocp
        items = {k: ocp.args.JsonSave(json_values[k]) for k in self.json_items}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.PyGrainCheckpointSave(data_iter),
                trained_on=ocp.args.JsonSave(self.trained_on),
                **items,
            ),
        )

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def restore(self, abstract_state: Callable[[], Any], data_iter) -> tuple[Optional[int], Any, dict]:
        """(step, state, {json item: value}) of the latest readable checkpoint, the data iterator moved to
        its position; (None, None, {}) when there is none. An unreadable latest checkpoint is moved to
        `unreadable_checkpoints/` beside the directory (so later saves of its step are not skipped) and
        the previous kept one is used, with one line saying so; a CheckpointError when none is readable, or
        when the checkpoints were trained on something else than `trained_on`."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        abstract = abstract_state() if steps else None
        failed = []
        for step in steps:
            try:
                with _quiet_failed_reads():
                    self._check_trained_on(step)
                    restored = self._restore(step, abstract, data_iter)
            except StaleCheckpointError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure to read a checkpoint means "try the previous one"
                failed.append((step, e))
                continue
            if failed:
                self._set_aside(failed, step)
            return step, restored['state'], {k: restored[k] for k in self.json_items}
        if failed:
            reasons = '; '.join(f'step {s}: {_first_line(e)}' for s, e in failed)
            raise CheckpointError(
                f'{self.directory}: no readable checkpoint ({reasons}); delete it or use a new workdir'
            ) from None
        return None, None, {}

    def _restore(self, step: int, abstract, data_iter) -> dict:
        ocp = self.ocp
        return self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract),
                data=grain.PyGrainCheckpointRestore(data_iter),
                **{k: ocp.args.JsonRestore() for k in self.json_items},
            ),
        )

    def _check_trained_on(self, step: int) -> None:
        if not (self.directory / str(step) / 'trained_on').exists():
            print(
                f'{self.name}: checkpoint {step} in {self.directory} does not record what it was trained on '
                '(written by an older gsd); resuming without that check',
                flush=True,
            )
            return
        saved = self.manager.restore(step, args=self.ocp.args.Composite(trained_on=self.ocp.args.JsonRestore()))
        saved = saved['trained_on']
        if saved != self.trained_on:
            keys = sorted(set(saved) | set(self.trained_on))
            diff = {k: (saved.get(k), self.trained_on.get(k)) for k in keys if saved.get(k) != self.trained_on.get(k)}
            raise StaleCheckpointError(
                f'{self.directory}: these checkpoints were trained on other data or settings '
                f'({", ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())}); '
                f'delete {self.directory} or use a new workdir'
            )

    def _set_aside(self, failed: list, good: int) -> None:
        aside = self.directory.parent / f'unreadable_{self.directory.name}'
        if jax.process_index() == 0:
            for step, _ in failed:
                target = aside / str(step)
                k = 1
                while target.exists():
                    target, k = aside / f'{step}_{k}', k + 1
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.directory / str(step)), str(target))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices('gsd.training.loop: unreadable checkpoints set aside')
        self.manager.reload()
        steps = ', '.join(str(s) for s, _ in failed)
        print(
            f'{self.name}: checkpoint {steps} in {self.directory} is unreadable ({_first_line(failed[0][1])}); '
            f'moved to {aside}, resuming from step {good}',
            flush=True,
        )


@dataclasses.dataclass
class Finished:
    state: Any
    metrics: dict  # the last logged scalars ({} when no step ran)
    seconds: float  # wall clock of this run's loop
    resumed_from: Optional[int]  # the checkpoint step this run started from (None: initialised)


def _abstract(init: Callable[[], Any], sharding) -> Any:
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), jax.eval_shape(init))


def train(
    name: str,
    directory,
    *,
    mesh: Mesh,
    loader,
    init: Callable[[], Any],
    step: Callable[[Any, Any, int], tuple[Any, Any]],
    total_steps: int,
    batch_size: int,
    log_every: int,
    checkpoint_every: int,
    keep_checkpoints: int,
    trained_on: Mapping,
    hparams: Optional[Mapping] = None,
    log: Optional[Callable[[Any, int, dict], tuple[Any, dict, dict]]] = None,
    after_step: Optional[Callable[[Any, int], Optional[dict]]] = None,
    json_state: Optional[Mapping[str, tuple[Callable[[], Any], Callable[[Any], None]]]] = None,
) -> Finished:
    """Train (or resume) in `directory` (checkpoints/, tensorboard/); returns the final state and metrics.

    name: the prefix of printed lines and messages ('gan'). loader: a grain DataLoader of this
    process's batches (numpy arrays or dicts of them), each placed on `mesh` sharded along 'data'.
    init() -> a fresh state (replicated over `mesh`, with a `step` field); its shapes (jax.eval_shape)
    are the restore target. step(state, batch, index) -> (state, metrics or a list of metrics dicts):
    jax scalars each with a boolean 'finite'; a key missing at some steps is averaged over the
    steps that had it. batch_size: the global batch, for the progress line's images per second.

    Schedule, on the steps done (1-based): every `log_every` steps and at the end, the metrics'
    means are checked (FloatingPointError naming the last good checkpoint when one was not finite),
    passed through log(state, done, means) -> (state, scalars to write, values for the progress
    line) (default: the means for both), written and reported; then after_step(state, done) runs
    (after every step; may return {tag: uint8 image} for TensorBoard); every `checkpoint_every`
    steps and at the end the state is saved, with `trained_on` (a JSON-able record of the data and
    settings: a rerun with another record is refused) and json_state's items ({item: (get, set)}:
    get() saved, set(value) on restore). `hparams` are written once, by a run that starts afresh.
    """
    json_state = dict(json_state or {})
    directory = pathlib.Path(directory)
    checkpoints = Checkpoints(
        directory / 'checkpoints', name=name, keep=keep_checkpoints, trained_on=trained_on, json_items=list(json_state)
    )
    replicated = NamedSharding(mesh, P())
    data_iter = iter(loader)
    resumed, state, restored = checkpoints.restore(lambda: _abstract(init, replicated), data_iter)
    if resumed is None:
        state = init()
    else:
        for key, (_, set_value) in json_state.items():
            set_value(restored[key])
        print(f'{name}: resumed from step {resumed} in {checkpoints.directory}', flush=True)

    writer = metrics_lib.MetricWriter(directory / 'tensorboard')
    if resumed is None and hparams is not None:
        writer.write_hparams(hparams)
    start = int(jax.device_get(state.step))
    progress = metrics_lib.Progress(total_steps, batch_size, start, name=f'{name}: ')
    data_sharding = NamedSharding(mesh, P('data'))
    put = lambda x: jax.make_array_from_process_local_data(data_sharding, x)
    sums, counts, finite, since, last = {}, {}, jnp.array(True), start, {}

    def means(done: int) -> dict:
        values, ok = jax.device_get((sums, finite))
        out = {k: float(v) / counts[k] for k, v in values.items()}
        if not ok:
            latest = checkpoints.latest_step()
            where = f'step {latest} in {checkpoints.directory}' if latest is not None else 'none (no checkpoint yet)'
            raise FloatingPointError(
                f'{name}: non-finite loss between steps {since} and {done} ({out}); the last good checkpoint: {where}'
            )
        return out

    t0 = time.time()
    try:
        with stop.stoppable(finish=checkpoints.wait_until_finished):
            for index in range(start, total_steps):
                stop.check_stop(name)
                state, metrics = step(state, jax.tree.map(put, next(data_iter)), index)
                # Sums stay on device; the host reads them only at log steps (no round trip per step).
                for m in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
                    m = dict(m)
                    finite = finite & m.pop('finite')
                    for k, v in m.items():
                        sums[k] = sums.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
                done = index + 1
                end = done == total_steps
                if done % log_every == 0 or end:
                    values = means(done)
                    state, last, shown = log(state, done, values) if log else (state, values, values)
                    writer.write_scalars(done, last)
                    progress.report(done, **shown)
                    sums, counts, since = {}, {}, done
                if after_step is not None:
                    images = after_step(state, done)
                    if images:
                        writer.write_images(done, images)
                if done % checkpoint_every == 0 or end:
                    if sums:
                        means(done)  # a save between log steps: only a finite state becomes "the last good"
                    checkpoints.save(done, state, data_iter, {k: get() for k, (get, _) in json_state.items()})
    finally:
        writer.close()
    return Finished(state, last, round(time.time() - t0, 1), resumed)
