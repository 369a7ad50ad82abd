"""The pipeline's stages by name: each module has `run(config, workdir)` plus `models(config)` for shape checks,
and optionally `check(config)`, which refuses bad settings before any stage of the run starts."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib
import os
import pathlib
import socket
import time

from gsd import errors

# Stage name -> module (module name = stage name); imported lazily so a run only loads what it asks for.
STAGES = (
    'samples',
    'train_gan',
    'encoder',
    'shots',
    'annotate',
    'fewshot',
    'segment',
    'autoshot_data',
    'autoshot',
    'autoshot_segment',
    'report',
    'study',
)
LOCK = '.gsd.lock'


def get(name: str):
    if name not in STAGES:
        raise errors.SettingError(f'stages: unknown stage {name!r}; known: {", ".join(STAGES)}')
    return importlib.import_module(f'gsd.pipeline.{name}')


def names(value) -> list[str]:
    """A tuple field given on the command line as `--config.stages=a,b` arrives as ('a,b',) or 'a,b':
    split it into ['a', 'b'] (used for stages and report.methods)."""
    items = [value] if isinstance(value, str) else list(value)
    return [n.strip() for item in items for n in str(item).split(',') if n.strip()]


def stage_names(config) -> list[str]:
    """config.stages, every name checked, so that a typo in the last one fails before the first runs."""
    stages = names(config.get('stages') or ())
    if not stages:
        raise errors.SettingError(f'stages: no stage named; give some of {", ".join(STAGES)}')
    unknown = [n for n in stages if n not in STAGES]
    if unknown:
        raise errors.SettingError(
            f'stages: unknown stage{"s" if len(unknown) > 1 else ""} {", ".join(map(repr, unknown))}; '
            f'known: {", ".join(STAGES)}'
        )
    return stages


def _missing_key(e: BaseException) -> str:
    """'fewshot' from ConfigDict's AttributeError(KeyError("'fewshot'")), with no quotes or did-you-mean."""
    text = e
    while isinstance(text, BaseException) and text.args:
        text = text.args[0]
    key = (str(text).splitlines() or [''])[0].strip('"\'')
    return f'the setting {key!r}' if key else 'a setting'


def _workdir(workdir) -> pathlib.Path:
    if workdir is None or (isinstance(workdir, str) and not workdir.strip()):
        # pathlib.Path('') is '.': an empty --workdir= would scatter outputs over the current directory.
        raise errors.SettingError("--workdir: empty; give the directory for this run's outputs")
    workdir = pathlib.Path(workdir).expanduser()
    if workdir.exists() and not workdir.is_dir():
        raise errors.SettingError(f'--workdir: {workdir} exists and is not a directory')
    return workdir


@contextlib.contextmanager
def workdir_lock(workdir):
    """Hold WORKDIR/.gsd.lock (an exclusive `flock`) for a run, so a second run on the same workdir fails at
    once with one line naming the holder's pid instead of racing it (TFDS publishes, orbax saves, shots).

    Several JAX processes of ONE run (jax.process_count() > 1) share the workdir: process 0 takes
    `.gsd.lock`, process k > 0 `.gsd.lock.k`. So the processes of one run never block each other, while each
    process of a second run collides with its counterpart of the first (a second run's process 0 always
    meets the first run's, whatever the process counts). The file is left in place after the run: unlinking
    a lock file lets a third run lock a fresh file while a second still holds the unlinked one. On a file
    system without locks (some network mounts) the run goes on unlocked. The lock asks jax.process_index(), so
    a launcher that needs jax.distributed.initialize() must call it before run_all.
    """
    import jax  # here, not at the top: the stage-name and workdir checks fail fast without it

    index = jax.process_index()
    path = pathlib.Path(workdir) / (LOCK if index == 0 else f'{LOCK}.{index}')
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise errors.WorkdirBusy(f'{workdir}: another gsd run ({_holder(fd)}) is using this workdir') from None
            locked = False  # ENOLCK / EOPNOTSUPP: nothing to lock with here
        if locked:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """'pid N' (on HOST when another host) from the lock file; the holder writes it just after locking."""
    try:
        pid, host = (os.pread(fd, 256, 0).decode(errors='replace').split() + ['', ''])[:2]
    except OSError:
        pid, host = '', ''
    if not pid:
        return 'pid unknown'
    return f'pid {pid}' if host in ('', socket.gethostname()) else f'pid {pid} on {host}'


def run_all(config, workdir) -> dict:
    """Run config.stages in order, holding the workdir's lock (`workdir_lock`); returns {stage: its result}.
    Every stage name and every stage's `check(config)` pass before the first stage starts. With several JAX
    processes every process runs every stage (each splits its work over them, process 0 writes the files)
    and all wait for each other after each stage."""
    stages = stage_names(config)
    workdir = _workdir(workdir)
    modules = {name: get(name) for name in stages}
    for name, module in modules.items():
        if hasattr(module, 'check'):
            try:
                module.check(config)
            except AttributeError as e:  # ConfigDict: a block or field this config does not have
                raise errors.SettingError(
                    f'stages: stage {name} needs {_missing_key(e)}, which this config lacks'
                ) from None
    workdir.mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves no empty workdir behind
    from gsd.training import parallel

    results = {}
    with workdir_lock(workdir):
        for name, module in modules.items():
            results[name] = module.run(config, workdir)
            # Several processes: process 0 wrote the stage's files; none starts the next stage before that.
            parallel.barrier(f'gsd.pipeline: stage {name} done')
    return results


def run_seeds(config, workdir, seeds) -> dict:
    """`run_all` once per seed (config.seed = s; every seed-derived setting follows it) in WORKDIR/seed_<s>, then
    WORKDIR/summary.json and summary.md: each report method's mean +- std over the seeds (`gsd.protocol`).
    A seed whose whole run finished before with the same config (WORKDIR/seed_<s>/seed_run.json) is not run
    again, so an interrupted sweep resumes where it stopped; any other seed reruns its stages, which keep
    the outputs still valid for their settings."""
    import json

    from gsd import protocol
    from gsd.io import atomic
    from gsd.training import parallel

    workdir = _workdir(workdir)
    original = config.seed
    metrics = {}
    try:
        for i, s in enumerate(seeds):
            config.seed = int(s)
            seed_dir = workdir / f'seed_{s}'
            record = {'config': json.loads(config.to_json_best_effort())}
            done = seed_dir / 'seed_run.json'
            if done.exists() and (seed_dir / 'metrics.json').exists() and _same_config(done, record):
                print(f'seeds: seed {s} already done with this config in {seed_dir}; kept', flush=True)
                metrics[int(s)] = json.loads((seed_dir / 'metrics.json').read_text())
                continue
            print(f'seeds: seed {s} ({i + 1} of {len(seeds)}) -> {seed_dir}', flush=True)
            t0 = time.time()
            result = run_all(config, seed_dir)
            if 'report' in result:
                metrics[int(s)] = result['report']
            if parallel.is_writer():
                atomic.write_json(done, {**record, 'seconds': round(time.time() - t0, 1)})
    finally:
        config.seed = original
    summary = protocol.summarise(metrics)
    if parallel.is_writer():
        atomic.write_json(workdir / 'summary.json', {'seeds': [int(s) for s in seeds], 'methods': summary})
        with atomic.open_atomic(workdir / 'summary.md', 'w') as f:
            title = f'Mean +- std over seeds {", ".join(map(str, seeds))} (mean IoU: all classes)'
            f.write(protocol.markdown(summary, title))
    print(protocol.markdown(summary), flush=True)
    return summary


def _same_config(done: pathlib.Path, record: dict) -> bool:
    import json

    try:
        return json.loads(done.read_text()).get('config') == record['config']
    except (OSError, ValueError, AttributeError):
        return False


def projection_settings(p) -> dict:
    """`gsd.segmenters.segment_images` keyword arguments from a config's `projection` block (the stages that
    project real images, `segment` and `report`, read it the same way)."""
    from gsd import projection, segmenters  # imported here: the registry itself stays light

    return dict(
        batch_size=p.batch_size,
        steps=p.steps,
        lr=p.lr,
        space=p.space,
        optimize_noise=p.optimize_noise,
        perceptual=projection.make_perceptual(p.loss, p.get('vgg16_path') or None, p.get('lpips_path') or None),
        # The encoder's directory (None: start at w_avg); segment_images loads it for its generator.
        encoder=segmenters.encoder_path(p.get('encoder', '')),
    )
