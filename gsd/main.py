"""gsd's command line: run the pipeline stages a config names.

python -m gsd.main --config=configs/samples.py --workdir=/tmp/gsd_samples
python -m gsd.main --config=configs/samples.py:smoke --workdir=/tmp/gsd_smoke --config.seed=3
"""

import pathlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from gsd import pipeline
from gsd.training import stop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    'config', None, 'Path to a configs/*.py file (with an optional :arg).', lock_config=True
)
flags.DEFINE_string('workdir', None, "Directory for this run's outputs (created if missing).")
flags.mark_flags_as_required(['config', 'workdir'])


def _config_package_on_path(argv) -> None:
    """Configs import their shared blocks as the package `configs` (`from configs import common`): put the
    folder holding that package on sys.path, so a config file works from any working directory."""
    for arg in argv:
        if arg.startswith('--config='):
            path = pathlib.Path(arg[len('--config=') :].split(':')[0]).expanduser().resolve()
            if (path.parent / '__init__.py').exists() and str(path.parent.parent) not in sys.path:
                sys.path.insert(0, str(path.parent.parent))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    stop.handle_sigterm()
    logging.set_verbosity(logging.WARNING)  # keep orbax's per-file INFO lines out of the progress output
    pipeline.run_all(FLAGS.config, FLAGS.workdir)


def run() -> None:
    _config_package_on_path(sys.argv)
    app.run(main)


if __name__ == '__main__':
    run()
