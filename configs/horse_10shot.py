"""Ten-shot horse part segmentation in the paper's setting (Table 5): LSUN-horse StyleGAN2, PASCAL-Part horses.

Same steps as configs/car_10shot.py (read its docstring) with NVIDIA's
`stylegan2-horse-config-f.pkl` (256 px). Classes: background, head (with eyes, ears, muzzle),
neck_torso, legs (with hooves), tail. Paper: average IoU 53.1 (10-shot).
    python -m gsd.main --config=configs/horse_10shot.py --workdir=/tmp/horse10 \
        --config.generator.checkpoint=/data/stylegan2-horse-config-f.pkl --config.stages=shots
`:smoke` shrinks epochs, steps and the test set.
"""

from configs import car_10shot


def get_config(arg: str | None = None):
    return car_10shot.build(
        'horse',
        arg,
        'horse_10shot',
        'stylegan2-horse-config-f.pkl (NVIDIA StyleGAN2, LSUN horse 256 px)',
        resolution=256,
    )
