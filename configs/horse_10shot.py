"""Ten-shot horse part segmentation in the paper's setting (Table 5): LSUN-horse StyleGAN2, PASCAL-Part horses.

Same steps as configs/car_10shot.py (read its docstring) with NVIDIA's
`stylegan2-horse-config-f.pkl` (256 px). Classes: background, head (with eyes, ears, muzzle),
neck_torso, legs (with hooves), tail. Paper: average IoU 53.1 (10-shot).
    python -m gsd.main --config=configs/horse_10shot.py --workdir=/tmp/horse10 \
        --config.generator.checkpoint=/data/stylegan2-horse-config-f.pkl --config.stages=shots
`:smoke` shrinks epochs, steps and the test set.
"""

import importlib.util
import pathlib


def get_config(arg: str | None = None):
    spec = importlib.util.spec_from_file_location('car_10shot', pathlib.Path(__file__).with_name('car_10shot.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build('horse', arg, 'horse_10shot', 'stylegan2-horse-config-f.pkl (NVIDIA StyleGAN2, LSUN horse 256 px)',
                        resolution=256)
