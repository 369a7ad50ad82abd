"""Convert any supported StyleGAN2 checkpoint into gsd's own orbax checkpoint directory.

    python tools/convert_checkpoint.py stylegan2-ffhq-config-f.pkl checkpoints/ffhq
    python tools/convert_checkpoint.py 550000.pt checkpoints/ffhq --which G_ema

Writes OUT_DIR/gsd_stylegan2.json (architecture of each network, provenance: source path, format,
sha256) and OUT_DIR/<network>/ (orbax: params, const noise buffers, w_avg). Nothing in SRC is
executed. Load the result with `gsd.stylegan2.load(OUT_DIR, which='G_ema')`.
"""

from __future__ import annotations

import argparse
import sys
import time

from gsd import stylegan2
from gsd.stylegan2.loading import NETWORK_NAMES, build


def convert(src, out_dir, which=NETWORK_NAMES, crop_rows=None):
    nets, provenance = stylegan2.read_networks(src)
    chosen = [n for n in which if n in nets]
    if not chosen:
        raise stylegan2.LoadError(f'{src}: has none of the networks {", ".join(which)} (it has {", ".join(nets)})')
    networks = {}
    for name in chosen:
        kind, arch, variables = nets[name]
        if kind == 'G' and crop_rows is not None:
            arch = dict(arch, crop_rows=tuple(crop_rows))
        networks[name] = (build(kind, arch), variables)
    provenance = dict(
        provenance, converted_at=time.strftime('%Y-%m-%dT%H:%M:%S%z'), converter='tools/convert_checkpoint.py'
    )
    return stylegan2.save(out_dir, networks, provenance), chosen


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('src')
    ap.add_argument('out_dir')
    ap.add_argument('--which', nargs='+', default=list(NETWORK_NAMES), choices=NETWORK_NAMES)
    ap.add_argument(
        '--crop-rows',
        type=int,
        nargs=2,
        default=None,
        help='crop generator output rows, e.g. 64 448 for the 512x384 car models',
    )
    args = ap.parse_args(argv)
    try:
        out, chosen = convert(args.src, args.out_dir, args.which, args.crop_rows)
    except (stylegan2.LoadError, stylegan2.CheckpointError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {out} ({", ".join(chosen)})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
