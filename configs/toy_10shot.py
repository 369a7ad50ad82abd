"""Ten-shot part segmentation in the toy world: toy_1shot.py with ten labelled generated images.

Command:
    python -m gsd.main --config=configs/toy_10shot.py --workdir=/tmp/toy_10shot
Same stages and outputs as configs/toy_1shot.py (metrics.json, eval/, report.html); the head trains
on ten annotated samples (300 epochs of ten images: about ten times the one-shot head's training).
`:smoke` as in toy_1shot.py.
"""

import importlib.util
import pathlib

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    # The shared settings live in toy_1shot.py; load it by path so this works from any directory.
    spec = importlib.util.spec_from_file_location('toy_1shot', pathlib.Path(__file__).with_name('toy_1shot.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build(shots=10, arg=arg, name='toy_10shot')
