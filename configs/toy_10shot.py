"""Ten-shot part segmentation in the toy world: toy_1shot.py with ten labelled generated images.

Command:
    python -m gsd.main --config=configs/toy_10shot.py --workdir=/tmp/toy_10shot
Same stages and outputs as configs/toy_1shot.py (metrics.json, eval/, report.html); the head trains
on ten annotated samples (300 epochs of ten images: about ten times the one-shot head's training).
`:smoke` as in toy_1shot.py.
"""

import ml_collections

from configs import toy_1shot


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return toy_1shot.build(shots=10, arg=arg, name='toy_10shot')
