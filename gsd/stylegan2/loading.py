"""`load` any public StyleGAN2 checkpoint (or gsd's own) as a Flax module and its variables; `save` gsd's.

gsd's own format is a directory::

    OUT/gsd_stylegan2.json   {"format": "gsd-stylegan2", "version": 1, "networks": {name: {"kind", "arch"}},
                              "provenance": {"source", "source_format", "sha256", ...}}
    OUT/<name>/              one orbax checkpoint per network ({'params', 'buffers'}), name in G_ema, G, D
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsd.stylegan2 import importers, readers
from gsd.stylegan2.networks import Discriminator, Generator

METADATA = 'gsd_stylegan2.json'
NETWORK_NAMES = ('G_ema', 'G', 'D')
# Where each release keeps the network a `which` asks for.
_ROSINALITY_KEYS = {'G_ema': 'g_ema', 'G': 'g', 'D': 'd'}
_TF_KEYS = {'G_ema': 'Gs', 'G': 'G', 'D': 'D'}
W_AVG_SAMPLES = 10_000


class LoadError(ValueError):
    """One-line '<path>: <problem>' for checkpoints gsd cannot use."""


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def read_networks(path, only=None) -> tuple[dict, dict]:
    """Every network a file holds (or those named in `only`): ({name: (kind, arch, variables)}, provenance).
    Never runs code from the file."""
    path = pathlib.Path(path)
    if path.is_dir():
        return _read_gsd(path, only)
    container, obj = readers.read_checkpoint_file(path)
    provenance = {'source': str(path), 'sha256': sha256_of(path)}
    try:
        nets, source_format = _networks_from_container(container, obj)
    except importers.StateError as e:
        raise LoadError(f'{path}: {e}') from None
    if not nets:
        raise LoadError(f'{path}: holds no StyleGAN2 network')
    provenance['source_format'] = source_format
    for name, (kind, arch, variables) in nets.items():
        if only is not None and name not in only:
            continue
        if kind == 'G' and variables['buffers']['mapping'].get('w_avg') is None:
            # rosinality's train.py saves no latent mean; estimate it as rosinality's own code does.
            nets[name] = (kind, arch, _with_w_avg(build(kind, arch), variables))
            provenance.setdefault('w_avg_estimated', []).append(f'{name}: mean of {W_AVG_SAMPLES} mapped z, seed 0')
    return nets, provenance


def _networks_from_container(container: str, obj) -> tuple[dict, str]:
    nets = {}
    if container == 'nvidia-pytorch':
        for name in NETWORK_NAMES:
            net = obj['networks'].get(name)
            if net is None:
                continue
            kw = net.get('init_kwargs') or {}
            if name == 'D':
                mbstd = (kw.get('epilogue_kwargs') or {}).get('mbstd_group_size', 4)
                nets[name] = ('D',) + importers.import_nvidia_discriminator(net['state_dict'], mbstd, what=name)
            else:
                lr_mul = (kw.get('mapping_kwargs') or {}).get('lr_multiplier', 0.01)
                nets[name] = ('G',) + importers.import_nvidia_generator(net['state_dict'], lr_mul, what=name)
        return nets, 'nvidia-pytorch-pickle'
    if container == 'nvidia-tf':
        for name, key in _TF_KEYS.items():
            net = obj['networks'].get(key)
            if net is None:
                continue
            if name == 'D':
                nets[name] = ('D',) + importers.import_tf_discriminator(net['state_dict'], what=key)
            else:
                nets[name] = ('G',) + importers.import_tf_generator(net['state_dict'], what=key)
        return nets, 'tensorflow-pickle'
    if container in ('torch', 'npz'):
        if not isinstance(obj, dict):
            raise importers.StateError(f'holds a {type(obj).__name__}, not a dict of weights')
        if any(k in obj for k in _ROSINALITY_KEYS.values()):  # rosinality train.py / convert_weight.py
            for name, key in _ROSINALITY_KEYS.items():
                if isinstance(obj.get(key), dict):
                    nets[name] = _import_flat(obj[key], key, obj.get('latent_avg'))
            return nets, 'rosinality-checkpoint'
        arrays = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
        kind, arch, variables = _import_flat(arrays, 'state_dict', obj.get('latent_avg'))
        return {'G_ema' if kind == 'G' else 'D': (kind, arch, variables)}, f'{container}-state-dict'
    raise importers.StateError(f'unsupported container {container!r}')


def _import_flat(state: dict, what: str, latent_avg=None):
    naming = importers.detect_naming(state)
    if naming in importers.GENERATOR_IMPORTERS:
        if naming == 'rosinality-G':
            return ('G',) + importers.import_rosinality_generator(state, latent_avg, what=what)
        return ('G',) + importers.GENERATOR_IMPORTERS[naming](state, what=what)
    return ('D',) + importers.DISCRIMINATOR_IMPORTERS[naming](state, what=what)


def _read_gsd(path: pathlib.Path, only=None) -> tuple[dict, dict]:
    import orbax.checkpoint as ocp

    meta_path = path / METADATA
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise LoadError(f'{path}: directory has no {METADATA}; not a gsd StyleGAN2 checkpoint') from None
    except (OSError, ValueError) as e:
        raise LoadError(f'{meta_path}: unreadable metadata ({e})') from None
    networks = _validated_metadata(meta_path, meta)
    nets = {}
    ckptr = ocp.StandardCheckpointer()
    for name, (kind, arch) in networks.items():
        if only is not None and name not in only:
            nets[name] = None  # present, not restored
            continue
        try:
            variables = ckptr.restore((path / name).absolute())
        except Exception as e:  # orbax raises many types; the user needs the file and the reason
            first = str(e).splitlines()[0] if str(e) else ''
            raise LoadError(f'{path / name}: cannot restore orbax checkpoint ({type(e).__name__}: {first})') from None
        nets[name] = (kind, arch, jax.tree.map(np.asarray, variables))
    return nets, meta.get('provenance', {})


_ARCH_FIELDS = {'G': set(Generator.__dataclass_fields__), 'D': set(Discriminator.__dataclass_fields__)}
_ARCH_REQUIRED = {'G': {'resolution', 'channels', 'z_dim', 'w_dim', 'n_mlp'}, 'D': {'resolution', 'channels'}}


def _validated_metadata(meta_path, meta) -> dict:
    """{name: (kind, arch)} from gsd_stylegan2.json, or a LoadError saying what is wrong with it."""

    def bad(problem):
        return LoadError(f'{meta_path}: {problem}')

    if not isinstance(meta, dict) or meta.get('format') != 'gsd-stylegan2':
        found = meta.get('format') if isinstance(meta, dict) else type(meta).__name__
        raise bad(f'format is {found!r}, expected "gsd-stylegan2"')
    networks = meta.get('networks')
    if not isinstance(networks, dict) or not networks:
        raise bad('"networks" must be a non-empty object')
    out = {}
    for name, info in networks.items():
        kind = info.get('kind') if isinstance(info, dict) else None
        arch = info.get('arch') if isinstance(info, dict) else None
        if kind not in ('G', 'D') or not isinstance(arch, dict):
            raise bad(f'network {name!r} needs "kind" ("G" or "D") and an "arch" object')
        missing = _ARCH_REQUIRED[kind] - set(arch)
        unknown = set(arch) - _ARCH_FIELDS[kind]
        if missing or unknown:
            raise bad(f'network {name!r} arch: missing {sorted(missing)}, unknown {sorted(unknown)}')
        arch = dict(arch)
        for k in ('channels', 'crop_rows'):
            if arch.get(k) is not None:
                arch[k] = tuple(arch[k])
        out[name] = (kind, arch)
    return out


def build(kind: str, arch: dict, dtype=jnp.float32, precision=None):
    cls = Generator if kind == 'G' else Discriminator
    return cls(**arch, dtype=dtype, precision=precision)


def estimate_w_avg(module: Generator, variables, n: int = W_AVG_SAMPLES, seed: int = 0) -> np.ndarray:
    """Mean mapping output over n random z (what rosinality does for checkpoints without latent_avg)."""
    z = jax.random.normal(jax.random.PRNGKey(seed), (n, module.z_dim))
    w = module.apply(variables, z, method=lambda m, z: m.mapping(z))
    return np.asarray(jnp.mean(w, axis=0), np.float32)


def load(path, which: str = 'G_ema', *, dtype=jnp.float32, precision=None, crop_rows: Optional[tuple[int, int]] = None):
    """(module, variables) for network `which` ('G_ema', 'G' or 'D') of a checkpoint.

    Reads rosinality .pt, NVIDIA stylegan2-ada/stylegan3 .pkl, TensorFlow StyleGAN2 .pkl, torch
    state_dict .pt or .npz in rosinality/NVIDIA naming, and gsd's own directories. The architecture
    comes from the file. `crop_rows=(64, 448)` crops a car model's output to its 512x384 picture.
    """
    if which not in NETWORK_NAMES:
        raise ValueError(f'which must be one of {NETWORK_NAMES}, got {which!r}')
    nets, provenance = read_networks(path, only=(which,))
    if which not in nets:
        raise LoadError(f'{path}: has no {which} network (it has: {", ".join(sorted(nets))})')
    kind, arch, variables = nets[which]
    if kind == 'G' and crop_rows is not None:
        arch = dict(arch, crop_rows=tuple(crop_rows))
    module = build(kind, arch, dtype, precision)
    _check_tree(path, module, variables)
    return module, jax.tree.map(jnp.asarray, variables)


def _with_w_avg(module, variables):
    if variables['buffers']['mapping'].get('w_avg') is not None:
        return variables
    w_avg = estimate_w_avg(module, variables)
    buffers = dict(variables['buffers'], mapping={'w_avg': w_avg})
    return dict(variables, buffers=buffers)


def _check_tree(path, module, variables):
    """The variables must have exactly the structure and shapes the module builds."""
    if isinstance(module, Generator):
        args = (jnp.zeros((1, module.z_dim)),)
    else:
        args = (jnp.zeros((1, module.resolution, module.resolution, 3)),)
    expected = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))
    want = {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    have = {jax.tree_util.keystr(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(variables)}
    for k in sorted(set(want) | set(have)):
        if k not in have:
            raise LoadError(f'{path}: missing variable {k}')
        if k not in want:
            raise LoadError(f'{path}: unexpected variable {k}')
        if tuple(want[k]) != tuple(have[k]):
            raise LoadError(f'{path}: variable {k} has shape {tuple(have[k])}, the architecture needs {tuple(want[k])}')


def save(out_dir, networks: dict[str, tuple[Any, dict]], provenance: Optional[dict] = None):
    """Write gsd's checkpoint directory: networks = {name: (module, variables)}. Atomic: a crash leaves
    either the old directory or the complete new one."""
    import orbax.checkpoint as ocp

    out_dir = pathlib.Path(out_dir).absolute()
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / METADATA).exists())):
        # Only an empty directory or an earlier gsd checkpoint may be replaced: never a user's files.
        raise LoadError(
            f'{out_dir}: exists and is not an empty directory or a gsd StyleGAN2 checkpoint; refusing to overwrite it'
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{out_dir.name}.', dir=out_dir.parent))
    try:
        meta = {'format': 'gsd-stylegan2', 'version': 1, 'networks': {}, 'provenance': provenance or {}}
        ckptr = ocp.StandardCheckpointer()
        for name, (module, variables) in networks.items():
            ckptr.save(tmp / name, jax.tree.map(np.asarray, variables))
            ckptr.wait_until_finished()
            meta['networks'][name] = {'kind': 'G' if isinstance(module, Generator) else 'D', 'arch': arch_of(module)}
        (tmp / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def arch_of(module) -> dict:
    """The constructor fields that define a network's architecture (JSON-able)."""
    skip = {'dtype', 'precision', 'fused_modconv', 'parent', 'name'}
    fields = {f: getattr(module, f) for f in module.__dataclass_fields__ if f not in skip}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
