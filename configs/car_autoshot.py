"""Auto-shot car part segmentation (paper sec. 4.3) on NVIDIA's LSUN-car StyleGAN2 and PASCAL-Part cars.

Label the ten shots as in configs/car_10shot.py, then:
    python -m gsd.main --config=configs/car_autoshot.py --workdir=/tmp/carauto \
        --config.generator.checkpoint=/data/stylegan2-car-config-f.pkl \
        --config.report.data_root=/data/VOC2010 --config.stages=fewshot,autoshot_data,autoshot,report
5,000 generated 512x384 pictures (the car model's crop) labelled by the 10-shot head's logits, a
UNet trained with the paper's recipe (see configs/face_autoshot.py), evaluated with the UNet alone
on PASCAL-Part car crops. `:smoke` shrinks every count for a quick check. Every stage resumes.
"""

from configs import car_10shot, common


def get_config(arg: str | None = None):
    return with_autoshot(car_10shot.get_config(arg), arg, 'car_autoshot')


def with_autoshot(c, arg, name: str):
    """A 10-shot PASCAL-Part config (car or horse) with the paper's auto-shot stages."""
    c.stages = ('shots', 'fewshot', 'autoshot_data', 'autoshot', 'report')
    common.autoshot_blocks(
        c, num_images=5000, base_width=32, epochs=300, batch_size=16, generation_batch=8, dtype='bfloat16'
    )
    c.report.methods = ('autoshot',)
    if 'smoke' in common.parse_arg(arg, name):
        c.autoshot_data.num_images, c.autoshot_data.chunk_size, c.autoshot_data.batch_size = 8, 4, 1
        c.autoshot.epochs, c.autoshot.batch_size = 1, 2
    return c
