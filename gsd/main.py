"""gsd's command line: run the pipeline stages a config names.

    python -m gsd.main --config=configs/samples.py --workdir=/tmp/gsd_samples
    python -m gsd.main --config=configs/samples.py:smoke --workdir=/tmp/gsd_smoke --config.seed=3
"""

from absl import app, flags, logging
from ml_collections import config_flags

from gsd import stages

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a configs/*.py file (with an optional :arg).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for this run\'s outputs (created if missing).')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f'unexpected arguments: {argv[1:]}')
    stages.handle_sigterm()
    logging.set_verbosity(logging.WARNING)   # keep orbax's per-file INFO lines out of the progress output
    stages.run_all(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
    app.run(main)
