"""Auto-shot car part segmentation (paper sec. 4.3) on NVIDIA's LSUN-car StyleGAN2 and PASCAL-Part cars.

Label the ten shots as in configs/car_10shot.py, then:
    python -m gsd.main --config=configs/car_autoshot.py --workdir=/tmp/carauto \
        --config.generator.checkpoint=/data/stylegan2-car-config-f.pkl \
        --config.report.data_root=/data/VOC2010 --config.stages=fewshot,autoshot_data,autoshot,report
5,000 generated 512x384 pictures (the car model's crop) labelled by the 10-shot head's logits, a
UNet trained with the paper's recipe (see configs/face_autoshot.py), evaluated with the UNet alone
on PASCAL-Part car crops. `:smoke` shrinks every count for a quick check. Every stage resumes.
"""

import importlib.util
import pathlib

from gsd import autoshot


def load_base(name: str):
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(__file__).with_name(f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg: str | None = None):
    return with_autoshot(load_base('car_10shot').get_config(arg), arg)


def with_autoshot(c, arg):
    c.stages = ('shots', 'fewshot', 'autoshot_data', 'autoshot', 'report')
    autoshot.add_config(c, num_images=5000, base_width=32, epochs=300, batch_size=16, generation_batch=8,
                        dtype='bfloat16')
    c.report.methods = ('autoshot',)
    if arg == 'smoke':
        c.autoshot_data.num_images, c.autoshot_data.chunk_size, c.autoshot_data.batch_size = 8, 4, 1
        c.autoshot.epochs, c.autoshot.batch_size = 1, 2
    return c
