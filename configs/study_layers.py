"""The paper's Table 7 in the toy world: which generator layers the one-shot head should read.

Command:
    python -m gsd.main --config=configs/study_layers.py --workdir=/tmp/gsd_studies
configs/toy_1shot.py's head (1 shot) trained on Table 7's layer groups, on the test seeds 0, 1, 2:
A = the 4-8 px convs, B = 16-32 px, C = 64 px (this generator's last), A+B, B+C and all of them (the
shipped head reads 8-64 px). The head keeps the image channels (RGB and local contrast) it ships with,
so the study measures what the convs add to them. Each seed's test images are projected once and
every variant's head segments the same projections. Result and runtime: docs/studies.md.
`:smoke` as in study_labels.py.
"""

import ml_collections

from configs import common, study_labels, toy_1shot

GROUPS = ('A', 'B', 'C', 'AB', 'BC', 'ABC')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = toy_1shot.build(shots=1, arg=arg, name='study_layers')
    common.study_block(
        c,
        name='layers',
        title='Generator layer groups read by the 1-shot head (Table 7)',
        plot='bars',
        variants=tuple(f'{g}: fewshot.groups={g}; report.methods=fewshot' for g in GROUPS),
        stages=('shots', 'fewshot', 'report'),
    )
    if 'smoke' in common.parse_arg(arg, 'study_layers'):
        study_labels.smoke(c)
    return c
