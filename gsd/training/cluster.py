"""Joining a multi-process run (JAX's multi-controller model): every process runs the same command, and
`jax.distributed.initialize` makes their devices one global set.

`initialize` is called once, by `gsd.main`, before any JAX computation:
* with `--coordinator_address`, `--num_processes` and `--process_id` given, it joins that cluster (on CPU
  with the gloo collectives, so several local processes can stand in for several hosts);
* with none of them, it joins a cluster only where the environment describes one (a SLURM step or an Open
  MPI job of several tasks, a Cloud TPU slice whose environment lists several workers) and lets JAX read
  the rest from it; anything else stays one process, with nothing to set.
Library users call `initialize` (or `jax.distributed.initialize`) themselves before the first stage.
"""

from __future__ import annotations

import os
import re
from typing import Mapping, Optional

from gsd import errors

_ADDRESS = re.compile(r'^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$')


def detected(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The launcher of a multi-process job this process belongs to ('slurm', 'openmpi', 'cloud_tpu'), or None.

    Only jobs of more than one process count: a one-task SLURM allocation or a single-host TPU VM runs as one
    process, as on a workstation. Cloud TPU multi-host slices run fine without initialize (libtpu connects
    the hosts itself); joining the distributed service there adds health checks and the coordination
    service orbax uses, so it is done where the environment names the workers."""
    env = os.environ if environ is None else environ

    def count(name: str) -> int:
        try:
            return int(env.get(name, '1').split('(')[0])  # SLURM_NTASKS may read '4(x2)' in some versions
        except ValueError:
            return 1

    slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_PROCID', 'SLURM_LOCALID')
    if all(k in env for k in slurm) and max(count('SLURM_NTASKS'), count('SLURM_STEP_NUM_TASKS')) > 1:
        return 'slurm'
    if 'OMPI_MCA_orte_hnp_uri' in env and count('OMPI_COMM_WORLD_SIZE') > 1:
        return 'openmpi'
    workers = [w for w in env.get('TPU_WORKER_HOSTNAMES', '').split(',') if w.strip()]
    if len(workers) > 1 or env.get('MEGASCALE_COORDINATOR_ADDRESS'):
        return 'cloud_tpu'
    return None


def check_flags(coordinator_address: Optional[str], num_processes: Optional[int], process_id: Optional[int]) -> None:
    """The three flags together and consistent, else a SettingError naming the flag."""
    given = [v is not None and v != '' for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        missing = [n for n, g in zip(('--coordinator_address', '--num_processes', '--process_id'), given) if not g]
        raise errors.SettingError(
            f'{", ".join(missing)}: missing; a multi-process run needs --coordinator_address, --num_processes '
            'and --process_id together (or none of them, where the cluster is detected)'
        )
    if not any(given):
        return
    if not _ADDRESS.match(coordinator_address):
        raise errors.SettingError(
            f'--coordinator_address: {coordinator_address!r} is not host:port (process 0 listens there)'
        )
    if num_processes < 1:
        raise errors.SettingError(f'--num_processes: must be at least 1, got {num_processes}')
    if not 0 <= process_id < num_processes:
        raise errors.SettingError(f'--process_id: must be in 0..{num_processes - 1}, got {process_id}')


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    timeout_s: int = 300,
) -> str:
    """Join the run's cluster (see the module docstring); returns what was done, for the log: 'single
    process', 'flags' or the detected launcher's name."""
    check_flags(coordinator_address, num_processes, process_id)
    explicit = coordinator_address not in (None, '')
    launcher = None if explicit else detected()
    if not explicit and launcher is None:
        return 'single process'
    if explicit and num_processes == 1:
        return 'single process'
    import jax

    # CPU devices of several processes talk through gloo (no effect on GPU or TPU devices).
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    try:
        if explicit:
            jax.distributed.initialize(
                coordinator_address,
                num_processes=num_processes,
                process_id=process_id,
                initialization_timeout=timeout_s,
            )
        else:
            jax.distributed.initialize(initialization_timeout=timeout_s)
    except Exception as e:  # noqa: BLE001 - e.g. a coordinator that never answers: one line, not a traceback
        where = coordinator_address if explicit else f'the {launcher} environment'
        detail = ' '.join(str(e).split())[:300]
        raise errors.SettingError(f'--coordinator_address: cannot join the cluster at {where}: {detail}') from None
    return 'flags' if explicit else launcher
