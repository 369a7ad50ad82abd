"""Every gsd benchmark in one run, on whatever devices JAX finds, into one JSON file.

    python tools/bench_all.py --quick --out bench_all.json     # the short set (<= 8 min on one current GPU)
    python tools/bench_all.py --out bench_all.json             # each benchmark's own default sizes

Runs, each in its own subprocess (so each one's peak host memory, ru_maxrss, is its own, and one JAX
process never holds an accelerator's memory while the next starts):
  generator   tools/bench_generator.py: config-f generator at 256 and 1024 px, float32 and bfloat16,
              forward and the gradient projection takes, against the machine's peak measured in that run;
  projection  tools/bench_projection.py --real: the shipped toy generator, s/image, PSNR and the scripted
              annotator's IoU on the reconstructions, from w_avg and from the shipped encoder;
  heads       tools/bench_fewshot.py: CNN head training at 512 px (config-f features, bfloat16 storage);
  autoshot    tools/bench_autoshot.py: labelled-image generation, UNet training and inference;
  gan_step    tools/bench_training.py: one full StyleGAN2 training step.
A benchmark that fails or runs out of its time share is recorded with its error and the rest go on.
Writes `--out` (the benchmarks' own JSON objects, with wall time, exit status and peak RSS each) and
prints one summary line per benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

TOOLS = pathlib.Path(__file__).resolve().parent

# (name, script, quick arguments, full arguments)
BENCHES = (
    (
        'generator',
        'bench_generator.py',
        ['--res', '256', '1024', '--batch', '1', '8', '--repeats', '2', '--dtype', 'float32', 'bfloat16'],
        ['--dtype', 'float32', 'bfloat16'],
    ),
    (
        'projection',
        'bench_projection.py',
        ['--real', '16', '--real-batch', '8', '--steps', '40', '--plain-steps', '200', '--encoder', 'gsd:toy_encoder'],
        ['--real', '100', '--steps', '200', '40', '--encoder', 'gsd:toy_encoder'],
    ),
    (
        'heads',
        'bench_fewshot.py',
        ['--res', '512', '--modes', 'fused', '--shots', '2', '--steps', '4'],
        ['--res', '512'],
    ),
    ('autoshot', 'bench_autoshot.py', ['--quick'], []),
    ('gan_step', 'bench_training.py', ['--repeats', '2'], []),
)


def run_one(name: str, script: str, args: list[str], timeout: float) -> dict:
    """Run one benchmark; its JSON (the last line it prints), wall time, exit status and peak RSS."""
    import tempfile
    import threading

    cmd = [sys.executable, str(TOOLS / script), *args]
    print(f'bench_all: {name}: {" ".join(cmd[1:])}', flush=True)
    t0 = time.time()
    with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=TOOLS.parent)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (its peak RSS)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.strip()]
        err_lines = err.read().strip().splitlines()
    record = {
        'name': name,
        'args': args,
        'seconds': round(time.time() - t0, 1),
        'exit': proc.returncode,
        'peak_rss_gb': round(usage.ru_maxrss * (1 if sys.platform == 'darwin' else 1024) / 2**30, 2),
    }
    if time.time() - t0 >= timeout:
        record['error'] = f'stopped after {timeout:.0f} s'
    try:
        record['result'] = json.loads(lines[-1])
        record['log'] = lines[:-1]
    except (IndexError, ValueError):
        record.setdefault('error', (err_lines or ['no output'])[-1][:500])
        record['log'] = lines[-20:]
    if proc.returncode != 0:
        record.setdefault('error', (err_lines or [f'exit {proc.returncode}'])[-1][:500])
    return record


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quick', action='store_true', help='the short set: <= 8 minutes on one current GPU')
    ap.add_argument('--out', default='bench_all.json', help='the JSON file to write')
    ap.add_argument('--only', nargs='*', choices=[b[0] for b in BENCHES], help='run only these benchmarks')
    ap.add_argument('--timeout', type=float, default=0, help='seconds per benchmark (default: 600, 3600 full)')
    args = ap.parse_args()
    timeout = args.timeout or (600 if args.quick else 3600)
    out = pathlib.Path(args.out)
    t0 = time.time()
    results = []
    for name, script, quick, full in BENCHES:
        if args.only and name not in args.only:
            continue
        record = run_one(name, script, quick if args.quick else full, timeout)
        results.append(record)
        status = record.get('error') or 'ok'
        print(f'bench_all: {name}: {status} in {record["seconds"]} s', flush=True)
        for line in record.get('log', [])[-12:]:
            print(f'  {line}', flush=True)
    summary = {
        'bench': 'all',
        'quick': args.quick,
        'host': platform.node(),
        'cpu': platform.processor() or platform.machine(),
        'cpus': os.cpu_count(),
        'seconds': round(time.time() - t0, 1),
        'benches': results,
    }
    tmp = out.with_name(out.name + '.tmp')
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, out)  # never a half-written file
    print(f'bench_all: {len(results)} benchmarks in {summary["seconds"]} s -> {out}', flush=True)


if __name__ == '__main__':
    main()
