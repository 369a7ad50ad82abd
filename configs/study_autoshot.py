"""The paper's Table 3 in the toy world: the one-shot head against the auto-shot UNet it taught, per class.

Command:
    python -m gsd.main --config=configs/study_autoshot.py --workdir=/tmp/gsd_studies
configs/toy_1shot.py's pipeline (the `mlp_1shot` variant of study_labels.py: one shot, the MLP head,
600 generated images, the class-balanced UNet) on the test seeds 0, 1, 2, plotted per class.
Result and runtime: docs/studies.md. `:smoke` as in study_labels.py.
"""

import ml_collections

from configs import common, study_labels, toy_1shot


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = toy_1shot.build(shots=1, arg=arg, name='study_autoshot')
    common.study_block(
        c,
        name='autoshot',
        title='Few-shot head against auto-shot UNet, per class (Table 3)',
        plot='per_class',
        variants=(study_labels.MLP[1],),
        stages=study_labels.STAGES,
    )
    if 'smoke' in common.parse_arg(arg, 'study_autoshot'):
        study_labels.smoke(c)
    return c
