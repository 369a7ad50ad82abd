"""Auto-shot horse part segmentation (paper sec. 4.3) on NVIDIA's LSUN-horse StyleGAN2 and PASCAL-Part horses.

Label the ten shots as in configs/horse_10shot.py, then:
    python -m gsd.main --config=configs/horse_autoshot.py --workdir=/tmp/horseauto \
        --config.generator.checkpoint=/data/stylegan2-horse-config-f.pkl \
        --config.report.data_root=/data/VOC2010 --config.stages=fewshot,autoshot_data,autoshot,report
The same recipe as configs/car_autoshot.py at the horse model's 256 px. `:smoke` shrinks it.
"""

from configs import car_autoshot, horse_10shot


def get_config(arg: str | None = None):
    return car_autoshot.with_autoshot(horse_10shot.get_config(arg), arg, 'horse_autoshot')
