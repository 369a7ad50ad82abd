"""Measure a toy-world generator: does the scripted annotator accept its samples, with real class shares?

    python tools/toy_quality.py /tmp/toy_gan/generator              # any path gsd.stylegan2.load reads
    python tools/toy_quality.py /tmp/toy_gan/generator --num 1000 --psi 0.7

`gsd.toy.quality.measure`: samples `--num` images (seed 0, truncation psi), runs `gsd.toy.annotate` on
each, and compares each class's pixel share over the accepted annotations with its share over as many
real toy images (ground-truth masks, `gsd.toy.sample`). Targets (issue 3): acceptance >= 90%, every class's share
within 20% (relative) of the real one. Also reports the refusal reasons. Prints readable lines, then
one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys

from gsd import toy
from gsd.toy.quality import measure


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('generator')
    ap.add_argument('--num', type=int, default=1000)
    ap.add_argument('--psi', type=float, default=0.7)
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    r = measure(args.generator, args.num, args.psi, args.seed)
    print(f'annotator acceptance: {r["acceptance"]:.1%} of {r["num"]} samples at psi {r["psi"]} (target >= 90%)')
    if r['refusals']:
        print('refusals: ' + ', '.join(f'{k}: {v}' for k, v in r['refusals'].items()))
    print(f'{"class":<12}{"generated":>10}{"real":>10}{"rel. err":>10}')
    for c in toy.CLASSES:
        print(
            f'{c:<12}{r["share_generated"][c]:>10.4f}{r["share_real"][c]:>10.4f}{r["share_relative_error"][c]:>+10.1%}'
        )
    print(f'meets targets: {r["meets_targets"]}')
    print(json.dumps(r))
    return 0


if __name__ == '__main__':
    sys.exit(main())
