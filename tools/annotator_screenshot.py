"""A screenshot of the browser annotator labelling a toy shot (README's docs/annotator.png), in headless Chromium.

    python tools/annotator_screenshot.py                                   # 512 px -> docs/annotator.png
    python tools/annotator_screenshot.py --size 1024 --out /tmp/annotator_1024.png

Writes a shots folder of three toy-world faces of --size px into a temporary workdir (shot 00000 half labelled
and in progress, 00001 done, 00002 empty), serves it with gsd's annotator (`gsd.annotate.server`) and has
Debian's Chromium (`apt-get install chromium`) take the page's screenshot from its command line; no
WebDriver is needed. The toy world draws its faces at any size; the shipped toy generator's are 64 px.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from gsd import toy
from gsd.annotate import server, store
from gsd.io import annotation
from gsd.io import images as image_io

REPO = pathlib.Path(__file__).resolve().parents[1]
# What the first shot has so far: the person has not reached the nose and mouth yet.
DONE_SO_FAR = (toy.SKIN, toy.HAIR, toy.LEFT_EYE, toy.RIGHT_EYE)


def write_shots(workdir: pathlib.Path, size: int, seed: int) -> None:
    shots = workdir / 'shots'
    colours = annotation.palette(toy.CLASSES, toy.PALETTE)
    imgs, masks = toy.sample(3, seed=seed, size=size)
    partial = np.where(np.isin(masks[0], DONE_SO_FAR), masks[0], 0).astype(np.uint8)
    labels = [partial, masks[1].astype(np.uint8), None]
    for k, (img, label) in enumerate(zip(imgs, labels)):
        image_io.write_png(shots / 'images' / f'{k:05d}.png', img)
        if label is None:
            annotation.write_label_template(shots / 'labels' / f'{k:05d}.png', img, colours)
        else:
            image_io.write_png(shots / 'labels' / f'{k:05d}.png', label, palette=colours)
    np.savez(shots / 'latents.npz', z=np.zeros((3, 1)), ws=np.zeros((3, 1, 1), np.float32), candidate=np.arange(3))
    (shots / 'shots.json').write_text(json.dumps({'settings': {}, 'num': 3, 'labelled_by': 'annotator_screenshot'}))
    state = {'00000': {'state': 'in_progress', 'by': 'person'}, '00001': {'state': 'done', 'by': 'person'}}
    (shots / store.STATE_FILE).write_text(json.dumps({'version': 1, 'shots': state}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=int, default=512, help='shot size in pixels')
    ap.add_argument('--seed', type=int, default=9, help='toy world seed of the three faces')
    ap.add_argument('--out', type=pathlib.Path, default=REPO / 'docs' / 'annotator.png')
    ap.add_argument('--window', default='1400,900', help='browser window, width,height')
    ap.add_argument('--chromium', default='/usr/bin/chromium')
    args = ap.parse_args(argv)
    if not shutil.which(args.chromium):
        print(f'{args.chromium}: not found; apt-get install chromium', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix='gsd_annotator_') as tmp:
        tmp = pathlib.Path(tmp)
        write_shots(tmp / 'workdir', args.size, args.seed)
        shots = store.ShotStore(tmp / 'workdir' / 'shots', toy.CLASSES, toy.PALETTE)
        # The Assist button is shown enabled, as in a run with a trained generator; nothing presses it here.
        app = server.Annotator(shots, assist=lambda labels, train, targets: {}, assist_epochs=100).start()
        try:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    args.chromium,
                    '--headless=new',
                    '--no-sandbox',
                    '--disable-gpu',
                    '--hide-scrollbars',
                    '--force-device-scale-factor=1',
                    f'--user-data-dir={tmp / "profile"}',
                    f'--window-size={args.window}',
                    '--virtual-time-budget=10000',  # the page loads its shot and label after the load event
                    f'--screenshot={args.out.resolve()}',
                    app.url,
                ],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
            )
        finally:
            app.close()
    print(f'annotator: {args.size} px shot -> {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
