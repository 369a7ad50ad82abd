"""The paper's Table 1 in the toy world: the CNN head against the MLP head at 1, 5 and 10 shots.

Command:
    python -m gsd.main --config=configs/study_heads.py --workdir=/tmp/gsd_studies
configs/toy_1shot.py's pipeline on the test seeds 0, 1, 2 with the paper's MLP head (`mlp_*shot`, the
same runs as study_labels.py's, with their auto-shot UNets) and its CNN head (`cnn_*shot`, head and
report only), each reading the same layers and image channels. Result and runtime: docs/studies.md.
`:smoke` as in study_labels.py.
"""

import ml_collections

from configs import common, study_labels, toy_1shot


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = toy_1shot.build(shots=1, arg=arg, name='study_heads')
    cnn = tuple(
        f'cnn_{k}shot: fewshot.head=cnn; shots.num={k}; stages=shots,fewshot,report; report.methods=fewshot'
        for k in (1, 5, 10)
    )
    mlp = study_labels.MLP
    common.study_block(
        c,
        name='heads',
        title='CNN head against MLP head (Table 1)',
        plot='bars',
        variants=(mlp[1], cnn[0], mlp[5], cnn[1], mlp[10], cnn[2]),
        stages=study_labels.STAGES,
    )
    if 'smoke' in common.parse_arg(arg, 'study_heads'):
        study_labels.smoke(c)
    return c
