"""`load` any public StyleGAN2 checkpoint (or gsd's own) as a Flax module and its variables; `save` gsd's.

gsd's own format is a directory::

    OUT/gsd_stylegan2.json   {"format": "gsd-stylegan2", "version": 1, "networks": {name: {"kind", "arch"}},
                              "provenance": {"source", "source_format", "sha256", ...}}
    OUT/<name>/              one orbax checkpoint per network ({'params', 'buffers'}), name in G_ema, G, D

Refused with a LoadError naming the file (one line): a tensor holding a NaN or an infinity (naming the tensor),
names or shapes that form no StyleGAN2 network, and in gsd's directories a `gsd_stylegan2.json` whose
`arch` is malformed or disagrees with the stored weights (naming the field). Tensors a file holds that the
import does not use (beyond the fixed resampling filters) are not an error: `read_networks` records them in
the provenance as {"unused_tensors": {network: [names]}} (so a converted directory keeps the record) and
warns once per network with an UnusedTensorWarning.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import pathlib
import warnings
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from gsd import errors
from gsd.io import atomic, param_store
from gsd.stylegan2 import importers, readers
from gsd.stylegan2.networks import Discriminator, Generator, block_resolutions

METADATA = 'gsd_stylegan2.json'
NETWORK_NAMES = ('G_ema', 'G', 'D')
# Where each release keeps the network a `which` asks for.
_ROSINALITY_KEYS = {'G_ema': 'g_ema', 'G': 'g', 'D': 'd'}
_TF_KEYS = {'G_ema': 'Gs', 'G': 'G', 'D': 'D'}
W_AVG_SAMPLES = 10_000


class LoadError(errors.GsdError, ValueError):
    """One-line '<path>: <problem>' for checkpoints gsd cannot use."""


class UnusedTensorWarning(errors.GsdWarning):
    """A checkpoint holds tensors the import ignored; the message names the file, the network and the tensors."""


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def read_networks(path, only=None) -> tuple[dict, dict]:
    """Every network a file holds (or those named in `only`): ({name: (kind, arch, variables)}, provenance).
    Never runs code from the file. Tensors the import ignored: provenance['unused_tensors'] and a warning."""
    path = pathlib.Path(path)
    if path.is_dir():
        return _read_gsd(path, only)
    container, obj = readers.read_checkpoint_file(path)
    provenance = {'source': str(path), 'sha256': sha256_of(path)}
    try:
        imported, source_format = _networks_from_container(container, obj)
    except importers.StateError as e:
        raise LoadError(f'{path}: {e}') from None
    if not imported:
        raise LoadError(f'{path}: holds no StyleGAN2 network')
    provenance['source_format'] = source_format
    nets = {name: (kind, arch, variables) for name, (kind, arch, variables, _) in imported.items()}
    for name, (kind, arch, variables, unused) in imported.items():
        if only is not None and name not in only:
            continue
        if unused:
            provenance.setdefault('unused_tensors', {})[name] = unused
            shown = ', '.join(unused[:8]) + (f' and {len(unused) - 8} more' if len(unused) > 8 else '')
            warnings.warn(
                f'{path}: {name}: ignored {len(unused)} tensor(s) gsd does not use: {shown}',
                UnusedTensorWarning,
                stacklevel=2,
            )
        if kind == 'G' and variables['buffers']['mapping'].get('w_avg') is None:
            # rosinality's train.py saves no latent mean; estimate it as rosinality's own code does.
            nets[name] = (kind, arch, _with_w_avg(build(kind, arch), variables))
            provenance.setdefault('w_avg_estimated', []).append(f'{name}: mean of {W_AVG_SAMPLES} mapped z, seed 0')
        _check_finite(f'{path}: {name}', nets[name][2])
    return nets, provenance


def _networks_from_container(container: str, obj) -> tuple[dict, str]:
    """({name: (kind, arch, variables, unused tensor names)}, source format)."""
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
        kind, *rest = _import_flat(arrays, 'state_dict', obj.get('latent_avg'))
        return {'G_ema' if kind == 'G' else 'D': (kind, *rest)}, f'{container}-state-dict'
    raise importers.StateError(f'unsupported container {container!r}')


def _import_flat(state: dict, what: str, latent_avg=None):
    naming = importers.detect_naming(state)
    if naming == 'rosinality-G':
        # An .npz keeps latent_avg beside the layers: read as the latent mean, it is not unused.
        kind, arch, variables, unused = ('G',) + importers.import_rosinality_generator(state, latent_avg, what=what)
        return kind, arch, variables, [k for k in unused if not (k == 'latent_avg' and latent_avg is not None)]
    if naming in importers.GENERATOR_IMPORTERS:
        return ('G',) + importers.GENERATOR_IMPORTERS[naming](state, what=what)
    return ('D',) + importers.DISCRIMINATOR_IMPORTERS[naming](state, what=what)


def _read_gsd(path: pathlib.Path, only=None) -> tuple[dict, dict]:

    meta_path = path / METADATA
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError:
        raise LoadError(f'{path}: directory has no {METADATA}; not a gsd StyleGAN2 checkpoint') from None
    except (OSError, ValueError) as e:
        raise LoadError(f'{meta_path}: unreadable metadata ({e})') from None
    networks = _validated_metadata(meta_path, meta)
    nets = {}
    ckptr = param_store.checkpointer()  # process 0 writes; any process reads alone
    for name, (kind, arch) in networks.items():
        if only is not None and name not in only:
            nets[name] = None  # present, not restored
            continue
        try:
            variables = ckptr.restore((path / name).absolute())
        except Exception as e:  # orbax raises many types; the user needs the file and the reason
            first = str(e).splitlines()[0] if str(e) else ''
            raise LoadError(f'{path / name}: cannot restore orbax checkpoint ({type(e).__name__}: {first})') from None
        variables = jax.tree.map(np.asarray, variables)
        _check_finite(path / name, variables)
        _check_arch_matches(meta_path, name, kind, arch, path / name, variables)
        nets[name] = (kind, arch, variables)
    return nets, meta.get('provenance', {})


_ARCH_FIELDS = {'G': set(Generator.__dataclass_fields__), 'D': set(Discriminator.__dataclass_fields__)}
_ARCH_REQUIRED = {'G': {'resolution', 'channels', 'z_dim', 'w_dim', 'n_mlp'}, 'D': {'resolution', 'channels'}}


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _arch_value_problem(kind: str, arch: dict, field: str) -> Optional[str]:
    """What is wrong with arch[field] of a gsd_stylegan2.json (None: nothing)."""
    v = arch[field]
    if field == 'resolution':
        ok = _positive_int(v) and v >= 4 and v & (v - 1) == 0
        return None if ok else 'a power of two >= 4'
    if field == 'channels':
        res = arch.get('resolution')
        n = len(block_resolutions(res)) if _positive_int(res) else None
        ok = isinstance(v, (list, tuple)) and all(_positive_int(c) for c in v) and (n is None or len(v) == n)
        per_block = f'one per block 4..{res} of arch.resolution'
        return None if ok else f'a list of {n or "one"} positive integer(s), {per_block}'
    if field in ('z_dim', 'w_dim', 'n_mlp', 'img_channels', 'mbstd_num_channels'):
        return None if _positive_int(v) else 'a positive integer'
    if field == 'mbstd_group_size':
        return None if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else 'an integer >= 0'
    if field == 'mapping_lr_mul':
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0
        return None if ok else 'a positive number'
    if field == 'crop_rows':
        res = arch.get('resolution') if _positive_int(arch.get('resolution')) else math.inf
        ok = v is None or (
            isinstance(v, (list, tuple))
            and len(v) == 2
            and all(isinstance(r, int) and not isinstance(r, bool) for r in v)
            and 0 <= v[0] < v[1] <= res
        )
        return None if ok else 'null or [first row, end row] inside the image'
    return None


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
        for field in sorted(arch, key=lambda f: (f != 'resolution', f)):  # channels' length follows resolution
            problem = _arch_value_problem(kind, arch, field)
            if problem:
                raise bad(f'networks.{name}.arch.{field} is {arch[field]!r}; it must be {problem}')
        arch = dict(arch)
        for k in ('channels', 'crop_rows'):
            if arch.get(k) is not None:
                arch[k] = tuple(arch[k])
        out[name] = (kind, arch)
    return out


def _stored_arch(kind: str, variables) -> dict:
    """The architecture fields the stored weights' shapes fix (KeyError etc. when they form no network)."""
    params = variables['params']
    if kind == 'G':
        syn, mapping = params['synthesis'], params['mapping']
        res = max(int(k[1:]) for k in syn)
        fc0 = np.shape(mapping['fc0']['weight'])
        return {
            'resolution': res,
            'channels': tuple(int(np.shape(syn[f'b{r}']['conv1']['bias'])[0]) for r in block_resolutions(res)),
            'z_dim': int(fc0[0]),
            'w_dim': int(fc0[1]),
            'n_mlp': len(mapping),
            'img_channels': int(np.shape(syn[f'b{res}']['torgb']['bias'])[0]),
        }
    res = max(int(k[1:]) for k in params)
    channels = [int(np.shape(params['b4']['conv']['bias'])[0])]
    channels += [int(np.shape(params[f'b{r}']['conv0']['bias'])[0]) for r in block_resolutions(res)[1:]]
    return {'resolution': res, 'channels': tuple(channels)}


def _json_value(v):
    return list(v) if isinstance(v, tuple) else v


def _check_arch_matches(meta_path, name, kind, arch, where, variables) -> None:
    """A hand-edited arch that the stored weights do not fit: name the json field, not just a variable."""
    module = build(kind, arch)
    try:
        _check_tree(where, module, variables)
    except LoadError as e:
        try:
            stored = _stored_arch(kind, variables)
        except (KeyError, TypeError, ValueError, IndexError):
            stored = {}
        given = {f: _json_value(getattr(module, f)) for f in stored}
        diff = [f for f in stored if _json_value(stored[f]) != given[f]]
        if not diff:
            raise LoadError(f'{meta_path}: networks.{name}.arch does not fit the weights in {e}') from None
        f = diff[0]
        raise LoadError(
            f'{meta_path}: networks.{name}.arch.{f} is {given[f]!r}, but the weights in {where} have {f} '
            f'{_json_value(stored[f])!r}'
        ) from None


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
    if not pathlib.Path(path).is_dir():  # gsd's directories were checked against their arch when read
        _check_tree(path, module, variables)
    return module, jax.tree.map(jnp.asarray, variables)


def _with_w_avg(module, variables):
    if variables['buffers']['mapping'].get('w_avg') is not None:
        return variables
    w_avg = estimate_w_avg(module, variables)
    buffers = dict(variables['buffers'], mapping={'w_avg': w_avg})
    return dict(variables, buffers=buffers)


def _check_finite(where, variables) -> None:
    """A NaN or an infinity in a weight would load and sample black images: refuse it, naming the variable."""
    for key, leaf in jax.tree_util.tree_leaves_with_path(variables):
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise LoadError(
                f'{where}: tensor {jax.tree_util.keystr(key)} holds {bad} non-finite value(s) (NaN or infinity)'
            )


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

    out_dir = pathlib.Path(out_dir).absolute()
    if out_dir.exists() and not (out_dir.is_dir() and (not any(out_dir.iterdir()) or (out_dir / METADATA).exists())):
        # Only an empty directory or an earlier gsd checkpoint may be replaced: never a user's files.
        raise LoadError(
            f'{out_dir}: exists and is not an empty directory or a gsd StyleGAN2 checkpoint; refusing to overwrite it'
        )
    with atomic.directory(out_dir) as tmp:
        meta = {'format': 'gsd-stylegan2', 'version': 1, 'networks': {}, 'provenance': provenance or {}}
        ckptr = param_store.checkpointer()  # process 0 writes; any process reads alone
        for name, (module, variables) in networks.items():
            ckptr.save(tmp / name, jax.tree.map(np.asarray, variables))
            ckptr.wait_until_finished()
            meta['networks'][name] = {'kind': 'G' if isinstance(module, Generator) else 'D', 'arch': arch_of(module)}
        (tmp / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return out_dir


def arch_of(module) -> dict:
    """The constructor fields that define a network's architecture (JSON-able)."""
    skip = {'dtype', 'precision', 'fused_modconv', 'parent', 'name'}
    fields = {f: getattr(module, f) for f in module.__dataclass_fields__ if f not in skip}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
