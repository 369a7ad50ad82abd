"""gsd's command line: run the pipeline stages a config names.

python -m gsd.main --config=configs/samples.py --workdir=/tmp/gsd_samples
python -m gsd.main --config=configs/samples.py:smoke --workdir=/tmp/gsd_smoke --config.seed=3

Bad input (a file, a folder or a setting) ends the run with one line on stderr, `gsd: <file or
setting>: <problem>`, and exit status 2; see `user_error` for what counts as bad input. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import dis
import pathlib
import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from gsd import errors, pipeline
from gsd.training import cluster, stop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Path to a configs/*.py file (with an optional :arg).', lock_config=True
)
flags.DEFINE_string('workdir', None, "Directory for this run's outputs (created if missing).")
flags.DEFINE_string(
    'seeds',
    '',
    "Run once per seed in WORKDIR/seed_N and summarise (mean +- std): 'test' (0,1,2), 'val' (100,101,102) "
    "or a list '0,1,2'; see gsd.protocol. Empty: one run with config.seed.",
)
flags.DEFINE_string(
    'coordinator_address',
    None,
    'host:port of process 0 in a multi-process run (with --num_processes and --process_id); unset: a '
    'cluster is joined only where SLURM, Open MPI or Cloud TPU describe one (gsd.training.cluster).',
)
flags.DEFINE_integer('num_processes', None, 'Processes in the multi-process run (see --coordinator_address).')
flags.DEFINE_integer('process_id', None, "This process's index, 0..num_processes-1 (see --coordinator_address).")
flags.mark_flags_as_required(['config', 'workdir'])


def _config_package_on_path(argv) -> None:
    """Configs import their shared blocks as the package `configs` (`from configs import common`): put the
    folder holding that package on sys.path, so a config file works from any working directory."""
    for arg in argv:
        if arg.startswith('--config='):
            path = pathlib.Path(arg[len('--config=') :].split(':')[0]).expanduser().resolve()
            if (path.parent / '__init__.py').exists() and str(path.parent.parent) not in sys.path:
                sys.path.insert(0, str(path.parent.parent))


_PACKAGE = pathlib.Path(__file__).resolve().parent
_RAISE_OPS = {dis.opmap[name] for name in ('RAISE_VARARGS', 'RERAISE') if name in dis.opmap}
# Builtin types gsd's stages raise for bad settings and files (next to errors.GsdError, which is always bad input).
_STAGE_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)


def _raised_by_gsd(e: BaseException) -> bool:
    """Whether a `raise` statement in gsd's own code raised `e`. The innermost frame alone is not enough:
    JAX filters its internal frames out of tracebacks, so an error raised inside jax.jit ends at the gsd line
    that called it; that line is a call, not a raise."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    try:
        in_gsd = pathlib.Path(code.co_filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False
    return in_gsd and 0 <= tb.tb_lasti < len(code.co_code) and code.co_code[tb.tb_lasti] in _RAISE_OPS


def user_error(e: BaseException) -> str | None:
    """The message for bad input, None for a bug. Bad input is gsd's own errors (errors.GsdError), an OS error
    naming a file (missing, unreadable, disk full) and the ValueError / FileNotFoundError / FloatingPointError
    that gsd's code raises itself for settings and files; a library's ValueError deep in a computation is a bug."""
    if isinstance(e, errors.GsdError):
        return str(e)
    if isinstance(e, OSError) and e.filename is not None:
        names = f'{e.filename} -> {e.filename2}' if e.filename2 is not None else str(e.filename)
        return f'{names}: {e.strerror or e}'
    if isinstance(e, _STAGE_ERRORS) and _raised_by_gsd(e):
        return str(e)
    return None


def report(e: BaseException) -> bool:
    """Print bad input as `gsd: <message>` on stderr (one line per file for an error listing several files,
    as AnnotationError does); False for a bug, which the caller re-raises with its traceback."""
    message = user_error(e)
    if message is None:
        return False
    lines = [' '.join(line.split()) for line in message.splitlines() if line.strip()] or [type(e).__name__]
    print('\n'.join(f'gsd: {line}' for line in lines), file=sys.stderr, flush=True)
    return True


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """gsd's own warnings (a skipped image, ignored tensors) as one `gsd: warning: ...` line each; the file
    and line of gsd's source that Python would print are no use to the user."""
    if issubclass(category, errors.GsdWarning) or category.__module__.startswith('gsd.'):
        print(f'gsd: warning: {" ".join(str(message).split())}', file=file or sys.stderr, flush=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _fail(message: str):
    print(f'gsd: {" ".join(message.split())}', file=sys.stderr, flush=True)
    sys.exit(2)


def _config_arg(argv) -> str:
    return next((a[len('--config=') :] for a in argv if a.startswith('--config=')), '')


def _parse_flags(argv):
    """absl's flag parsing, with its errors as one line: ml_collections reports a config file that raises, or
    a --config.X naming no setting, with a traceback inside the message or as one."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        flag = lines[0].removeprefix('flag ').split(': Error whilst parsing config file')[0]
        if len(lines) > 1 and lines[1].startswith('Traceback'):  # the config file's get_config raised
            error = lines[-1].split(': ', 1)[-1] if ': ' in lines[-1] else lines[-1]
            _fail(error if error.startswith(_config_arg(argv).split(':')[0]) else f'{flag}: {lines[-1]}')
        _fail(lines[0].removeprefix('flag ') if lines else type(e).__name__)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a setting the config has not
        text = e
        while isinstance(text, BaseException) and text.args:  # AttributeError(KeyError("'key'\nDid you mean..."))
            text = text.args[0]
        key, *hint = str(text).splitlines() or ['']
        key = key.strip('"\'')
        arg = next((a.split('=')[0] for a in argv if a.startswith('--config.') and key in a.split('=')[0]), None)
        hint = f'; {" ".join(hint)}' if hint else ''
        _fail(f'{arg or "--config." + key}: no such setting in {_config_arg(argv) or "the config"}{hint}')


def _loaded_config(argv):
    """FLAGS.config; ml_collections defers a config file's load failure (no such file) to its first use."""
    config = FLAGS.config
    try:
        config.keys()
    except OSError as e:
        path = _config_arg(argv).split(':')[0]
        if path and not pathlib.Path(path).expanduser().exists():
            _fail(f'{path}: no such config file (--config)')
        _fail(f'{path or "--config"}: cannot load the config ({str(e).splitlines()[-1].strip()})')
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    stop.handle_sigterm()
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-file INFO lines out of the progress output
    warnings.showwarning = _show_warning
    config = _loaded_config(sys.argv)
    try:
        # Before any JAX computation: the processes of one run become one set of devices.
        cluster.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        if FLAGS.seeds:
            from gsd import protocol

            pipeline.run_seeds(config, FLAGS.workdir, protocol.parse_seeds(FLAGS.seeds))
        else:
            pipeline.run_all(config, FLAGS.workdir)
    except Exception as e:  # noqa: BLE001 - bad input becomes one line; a bug is re-raised with its traceback
        if not report(e):
            raise
        sys.exit(2)


def run() -> None:
    _config_package_on_path(sys.argv)
    app.run(main, flags_parser=_parse_flags)


if __name__ == '__main__':
    run()
