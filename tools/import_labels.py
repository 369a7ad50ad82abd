"""Bring shot labels made in labelme, CVAT, COCO or Label Studio into a workdir, or export the shots to those tools.

    python tools/import_labels.py --format labelme SRC DIR                  # writes DIR/shots/labels/NNNNN.png
    python tools/import_labels.py --format coco SRC DIR --map face=skin --map hat=
    python tools/import_labels.py --format cvat --export OUT DIR            # the shots as a CVAT folder

DIR is the workdir whose `shots` stage wrote DIR/shots. A label goes to the shot with the same image file stem
(00003.jpg labels 00003.png); label names must be classes of DIR/shots/classes.json, or be mapped with
--map THEIRS=OURS (THEIRS= drops a label). Everything is checked before anything is written. See
`gsd.io.label_formats` for what each format's SRC is.
"""

from __future__ import annotations

import argparse
import sys

from gsd import errors
from gsd.io import label_formats

# How to open an export, printed after it is written.
_NEXT = {
    'labelme': 'labelme {out} --labels {out}/labels.txt --nodata',
    'cvat': 'create a task from {out}/JPEGImages with the labels of {out}/cvat_labels.json, then upload {out} '
    'as "Segmentation mask 1.1"',
    'coco': 'open {out}/images with {out}/annotations.json',
    'labelstudio': 'create a project with {out}/labeling_config.xml and import {out}/tasks.json '
    '(serving local files from {out})',
}


def _mapping(pairs) -> dict:
    mapping = {}
    for pair in pairs:
        theirs, sep, ours = pair.partition('=')
        if not sep or not theirs:
            raise errors.SettingError(f'--map: {pair!r} is not THEIRS=OURS (or THEIRS= to drop a label)')
        if theirs in mapping:
            raise errors.SettingError(f'--map: {theirs!r} is mapped twice')
        mapping[theirs] = ours or None
    return mapping


def run(args) -> str:
    """Do what the parsed arguments ask; returns the line to print. Raises GsdError on bad input."""
    if args.export is not None:
        if len(args.paths) != 1:
            raise errors.SettingError('--export: give one workdir: --export OUT DIR')
        if args.map:
            raise errors.SettingError('--map: only for importing')
        out = label_formats.export_shots(args.format, args.paths[0], args.export)
        return f'wrote {out}; next: ' + _NEXT[args.format].format(out=out)
    if len(args.paths) != 2:
        raise errors.SettingError(f'{" ".join(args.paths)}: give SRC DIR (the export to read, then the workdir)')
    written = label_formats.import_labels(args.format, args.paths[0], args.paths[1], _mapping(args.map))
    return f'wrote {len(written)} labels in {written[0].parent}'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        usage='%(prog)s --format FORMAT SRC DIR [--map THEIRS=OURS ...]\n'
        '       %(prog)s --format FORMAT --export OUT DIR',
    )
    ap.add_argument('--format', required=True, choices=label_formats.FORMATS)
    ap.add_argument('--map', action='append', default=[], metavar='THEIRS=OURS', help='label name -> class name')
    ap.add_argument('--export', metavar='OUT', help="write DIR's shots to the new folder OUT instead of importing")
    ap.add_argument('paths', nargs='+', metavar='SRC DIR', help='import: the export to read, then the workdir')
    args = ap.parse_args(argv)
    try:
        print(run(args))
    except errors.GsdError as e:
        # One line per problem, and no traceback: the fix is in the user's files, not in gsd.
        for line in str(e).splitlines():
            print(f'import_labels: {line}', file=sys.stderr)
        return 2
    except OSError as e:  # a folder that cannot be read or written
        print(f'import_labels: {e.filename or ""}: {e.strerror or e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
