"""Map the public releases' weight names and layouts onto gsd's StyleGAN2 variables.

Each importer takes a flat {name: np.ndarray} state (as the readers return it), infers the
architecture from the shapes, and returns ``(arch, variables, unused)`` where ``arch`` holds the keyword
arguments of :class:`~gsd.stylegan2.networks.Generator` (or ``Discriminator``), ``variables``
is ``{'params': ..., 'buffers': ...}`` of numpy float32 arrays and ``unused`` lists (sorted) the state's
tensors the import did not read. The fixed [1, 3, 3, 1] resampling filters every release stores
(NVIDIA's ``resample_filter``, rosinality's Blur / Upsample ``kernel``) and TensorFlow's ``lod`` are
not "unused": gsd builds them in, so a filter of any other shape is refused instead. A tensor with a
NaN or an infinity is refused, by name, whether or not it is used.

Layout facts (see the project notes): torch conv weights are [O, I, kh, kw] and dense weights
[out, in]; TensorFlow's are [kh, kw, I, O] and [in, out]. rosinality and NVIDIA-PyTorch store the
upsampling conv weight ready for conv_transpose; TensorFlow stores it in correlation form, which
conv_transpose needs flipped spatially. TensorFlow stores the modulation bias minus its +1 init.
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np

from gsd.stylegan2.networks import block_resolutions


class StateError(ValueError):
    """A state whose names or shapes do not form a supported StyleGAN2 network (the loader adds the file)."""


# Buffers the releases store but gsd's architecture fixes (see module doc).
_FIXED_BUFFER = re.compile(r'(^|[./])(resample_filter|kernel|lod)$')
_FIR = np.outer([1.0, 3.0, 3.0, 1.0], [1.0, 3.0, 3.0, 1.0]) / 64.0


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


def _conv(w) -> np.ndarray:
    """torch [O, I, kh, kw] -> HWIO."""
    return _f32(w).transpose(2, 3, 1, 0)


def _dense(w) -> np.ndarray:
    """torch [out, in] -> [in, out]."""
    return _f32(w).T


class _State:
    """A flat state with lookups that fail with the missing name and the offending shape."""

    def __init__(self, state: dict, what: str):
        self.state, self.what, self.used = state, what, set()

    def __contains__(self, key):
        return key in self.state

    def __getitem__(self, key) -> np.ndarray:
        if key not in self.state:
            raise StateError(f'{self.what}: missing tensor {key!r}')
        a = np.asarray(self.state[key])
        if key not in self.used:
            _check_finite(a, key, self.what)
            self.used.add(key)
        return a

    def expect(self, key, shape) -> np.ndarray:
        a = self[key]
        if tuple(a.shape) != tuple(shape):
            raise StateError(f'{self.what}: tensor {key!r} has shape {tuple(a.shape)}, expected {tuple(shape)}')
        return a

    def scalar(self, key) -> np.ndarray:
        a = self[key]
        if a.size != 1:
            raise StateError(f'{self.what}: tensor {key!r} has shape {tuple(a.shape)}, expected a scalar')
        return _f32(a).reshape(())

    def count(self, pattern: str) -> int:
        """Number of layers named by `pattern` (one group: the index); every index 0/1..max must exist,
        so a file missing one layer's tensor fails here instead of loading a shallower network."""
        found = sorted({int(m.group(1)) for k in self.state for m in [re.fullmatch(pattern, k)] if m})
        if not found:
            return 0
        first = found[0]
        for i in range(first, found[-1] + 1):
            if i not in found:
                name = pattern.replace(r'(\d+)', str(i)).replace('\\', '')
                raise StateError(f'{self.what}: missing tensor {name!r}')
        return len(found)

    def unused(self) -> list[str]:
        """The tensors nothing read, bar the fixed buffers (checked here: another filter is refused);
        every tensor is checked to be finite, so a NaN in an ignored one is not waved through either."""
        out = []
        for key in sorted(set(self.state) - self.used):
            a = np.asarray(self.state[key])
            _check_finite(a, key, self.what)
            if not _FIXED_BUFFER.search(key):
                out.append(key)
            elif not key.endswith('lod') and (
                a.shape != _FIR.shape or not a.sum() or not np.allclose(a / a.sum(), _FIR, atol=1e-6)
            ):
                raise StateError(
                    f'{self.what}: tensor {key!r} is not the [1, 3, 3, 1] resampling filter gsd implements '
                    f'(shape {tuple(a.shape)})'
                )
        return out


def _check_finite(a: np.ndarray, key: str, what: str) -> None:
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.complexfloating):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise StateError(f'{what}: tensor {key!r} holds {bad} non-finite value(s) (NaN or infinity)')


def detect_naming(state: dict) -> str:
    """'rosinality-G', 'rosinality-D', 'nvidia-G', 'nvidia-D', 'tf-G' or 'tf-D' from the names."""
    keys = set(state)
    checks = [
        ('rosinality-G', 'input.input'),
        ('rosinality-D', 'final_linear.1.weight'),
        ('nvidia-G', 'synthesis.b4.const'),
        ('nvidia-D', 'b4.out.weight'),
        ('tf-G', 'G_synthesis/4x4/Const/const'),
        ('tf-D', 'Output/weight'),
    ]
    for name, key in checks:
        if key in keys:
            return name
    sample = ', '.join(sorted(keys)[:5])
    raise StateError(f'names match no known StyleGAN2 layout (first names: {sample})')


# ---------------------------------------------------------------------------------------------
# Generators. Each returns params/buffers in gsd's tree from a per-layer accessor.


def _assemble_generator(resolution, channels, mapping, const, layer, torgb, w_avg, z_dim, w_dim, lr_mul):
    params = {'mapping': {f'fc{i}': {'weight': w, 'bias': b} for i, (w, b) in enumerate(mapping)}, 'synthesis': {}}
    buffers = {'mapping': {'w_avg': w_avg}, 'synthesis': {}}
    for r in block_resolutions(resolution):
        bp, bb = {}, {}
        if r == 4:
            bp['const'] = const
        for conv in ['conv1'] if r == 4 else ['conv0', 'conv1']:
            p, noise = layer(r, conv)
            bp[conv], bb[conv] = p, {'noise_const': noise}
        bp['torgb'] = torgb(r)
        params['synthesis'][f'b{r}'], buffers['synthesis'][f'b{r}'] = bp, bb
    arch = dict(
        resolution=resolution,
        channels=tuple(int(c) for c in channels),
        z_dim=int(z_dim),
        w_dim=int(w_dim),
        n_mlp=len(mapping),
        mapping_lr_mul=float(lr_mul),
    )
    return arch, {'params': params, 'buffers': buffers}


def import_rosinality_generator(state: dict, latent_avg=None, lr_mul: float = 0.01, what='rosinality G'):
    """rosinality `Generator.state_dict()`; `latent_avg` (convert_weight.py's) becomes w_avg when given."""
    s = _State(state, what)
    n_mlp = max(s.count(r'style\.(\d+)\.weight'), s.count(r'style\.(\d+)\.bias'))
    w_dim, z_dim = s['style.1.weight'].shape
    n_rgbs = s.count(r'to_rgbs\.(\d+)\.conv\.weight')
    resolution = 4 * 2**n_rgbs
    res = block_resolutions(resolution)
    channels = [s['conv1.conv.weight'].shape[1]] + [s[f'convs.{2 * k}.conv.weight'].shape[1] for k in range(n_rgbs)]
    ch = dict(zip(res, channels))
    mapping = [
        (_dense(s.expect(f'style.{i}.weight', (w_dim, z_dim if i == 1 else w_dim))), _f32(s[f'style.{i}.bias']))
        for i in range(1, n_mlp + 1)
    ]
    const = _f32(s.expect('input.input', (1, ch[4], 4, 4))[0]).transpose(1, 2, 0)

    def prefix(r, conv):
        if r == 4:
            return 'conv1', 0
        k = res.index(r) - 1
        j = 2 * k + (conv == 'conv1')
        return f'convs.{j}', j + 1

    def layer(r, conv):
        p, noise_idx = prefix(r, conv)
        cin = ch[r] if (conv == 'conv1' or r == 4) else ch[r // 2]
        weight = s.expect(f'{p}.conv.weight', (1, ch[r], cin, 3, 3))[0]
        return (
            {
                'weight': _conv(weight),
                'affine': {
                    'weight': _dense(s.expect(f'{p}.conv.modulation.weight', (cin, w_dim))),
                    'bias': _f32(s[f'{p}.conv.modulation.bias']),
                },
                'noise_strength': s.scalar(f'{p}.noise.weight'),
                'bias': _f32(s.expect(f'{p}.activate.bias', (ch[r],))),
            },
            _f32(s.expect(f'noises.noise_{noise_idx}', (1, 1, r, r))[0, 0]),
        )

    def torgb(r):
        p = 'to_rgb1' if r == 4 else f'to_rgbs.{res.index(r) - 1}'
        return {
            'weight': _f32(s.expect(f'{p}.conv.weight', (1, 3, ch[r], 1, 1))[0, :, :, 0, 0]).T,
            'affine': {
                'weight': _dense(s.expect(f'{p}.conv.modulation.weight', (ch[r], w_dim))),
                'bias': _f32(s[f'{p}.conv.modulation.bias']),
            },
            'bias': _f32(s.expect(f'{p}.bias', (1, 3, 1, 1)).reshape(3)),
        }

    w_avg = None
    if latent_avg is not None:
        _check_finite(np.asarray(latent_avg), 'latent_avg', what)
        w_avg = _f32(latent_avg).reshape(w_dim)
    arch, variables = _assemble_generator(
        resolution, channels, mapping, const, layer, torgb, w_avg, z_dim, w_dim, lr_mul
    )
    return arch, variables, s.unused()


def import_nvidia_generator(state: dict, lr_mul: float = 0.01, what='NVIDIA G'):
    """stylegan2-ada-pytorch / stylegan3 (StyleGAN2 config) `Generator.state_dict()`."""
    s = _State(state, what)
    if 'mapping.embed.weight' in s:
        raise StateError(f'{what}: class-conditional generators (c_dim > 0) are not supported')
    if 'synthesis.input.affine.weight' in s:
        raise StateError(f'{what}: this is a StyleGAN3 (alias-free) generator, not StyleGAN2')
    n_mlp = max(s.count(r'mapping\.fc(\d+)\.weight'), s.count(r'mapping\.fc(\d+)\.bias'))
    w_dim, z_dim = s['mapping.fc0.weight'].shape
    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'synthesis\.b(\d+)\.', k)] if m)
    res = block_resolutions(resolution)
    channels = [s[f'synthesis.b{r}.conv1.weight'].shape[0] for r in res]
    ch = dict(zip(res, channels))
    mapping = [(_dense(s[f'mapping.fc{i}.weight']), _f32(s[f'mapping.fc{i}.bias'])) for i in range(n_mlp)]
    const = _f32(s.expect('synthesis.b4.const', (ch[4], 4, 4))).transpose(1, 2, 0)

    def layer(r, conv):
        p = f'synthesis.b{r}.{conv}'
        cin = ch[r] if (conv == 'conv1' or r == 4) else ch[r // 2]
        return (
            {
                'weight': _conv(s.expect(f'{p}.weight', (ch[r], cin, 3, 3))),
                'affine': {
                    'weight': _dense(s.expect(f'{p}.affine.weight', (cin, w_dim))),
                    'bias': _f32(s[f'{p}.affine.bias']),
                },
                'noise_strength': s.scalar(f'{p}.noise_strength'),
                'bias': _f32(s.expect(f'{p}.bias', (ch[r],))),
            },
            _f32(s.expect(f'{p}.noise_const', (r, r))),
        )

    def torgb(r):
        p = f'synthesis.b{r}.torgb'
        return {
            'weight': _f32(s.expect(f'{p}.weight', (3, ch[r], 1, 1))[:, :, 0, 0]).T,
            'affine': {
                'weight': _dense(s.expect(f'{p}.affine.weight', (ch[r], w_dim))),
                'bias': _f32(s[f'{p}.affine.bias']),
            },
            'bias': _f32(s.expect(f'{p}.bias', (3,))),
        }

    w_avg = _f32(s['mapping.w_avg']) if 'mapping.w_avg' in s else None
    arch, variables = _assemble_generator(
        resolution, channels, mapping, const, layer, torgb, w_avg, z_dim, w_dim, lr_mul
    )
    return arch, variables, s.unused()


def import_tf_generator(state: dict, lr_mul: float = 0.01, what='TensorFlow Gs'):
    """Original TensorFlow StyleGAN2 (`G_mapping/...`, `G_synthesis/...`, `dlatent_avg`)."""
    s = _State(state, what)
    n_mlp = max(s.count(r'G_mapping/Dense(\d+)/weight'), s.count(r'G_mapping/Dense(\d+)/bias'))
    z_dim, w_dim = s['G_mapping/Dense0/weight'].shape
    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'G_synthesis/(\d+)x\1/', k)] if m)
    res = block_resolutions(resolution)
    channels = [s['G_synthesis/4x4/Conv/weight'].shape[3]] + [
        s[f'G_synthesis/{r}x{r}/Conv1/weight'].shape[3] for r in res[1:]
    ]
    ch = dict(zip(res, channels))
    mapping = [(_f32(s[f'G_mapping/Dense{i}/weight']), _f32(s[f'G_mapping/Dense{i}/bias'])) for i in range(n_mlp)]
    const = _f32(s.expect('G_synthesis/4x4/Const/const', (1, ch[4], 4, 4))[0]).transpose(1, 2, 0)
    noise_names = [f'b{r}.{c}' for r in res for c in (['conv1'] if r == 4 else ['conv0', 'conv1'])]

    def layer(r, conv):
        p = f'G_synthesis/{r}x{r}/' + ('Conv' if r == 4 else {'conv0': 'Conv0_up', 'conv1': 'Conv1'}[conv])
        cin = ch[r] if (conv == 'conv1' or r == 4) else ch[r // 2]
        weight = _f32(s.expect(f'{p}/weight', (3, 3, cin, ch[r])))
        if conv == 'conv0' and r > 4:
            weight = np.ascontiguousarray(weight[::-1, ::-1])
        i = noise_names.index(f'b{r}.{conv}')
        return (
            {
                'weight': weight,
                'affine': {
                    'weight': _f32(s.expect(f'{p}/mod_weight', (w_dim, cin))),
                    'bias': _f32(s[f'{p}/mod_bias']) + 1.0,
                },
                'noise_strength': s.scalar(f'{p}/noise_strength'),
                'bias': _f32(s.expect(f'{p}/bias', (ch[r],))),
            },
            _f32(s.expect(f'G_synthesis/noise{i}', (1, 1, r, r))[0, 0]),
        )

    def torgb(r):
        p = f'G_synthesis/{r}x{r}/ToRGB'
        return {
            'weight': _f32(s.expect(f'{p}/weight', (1, 1, ch[r], 3))[0, 0]),
            'affine': {
                'weight': _f32(s.expect(f'{p}/mod_weight', (w_dim, ch[r]))),
                'bias': _f32(s[f'{p}/mod_bias']) + 1.0,
            },
            'bias': _f32(s.expect(f'{p}/bias', (3,))),
        }

    w_avg = _f32(s['dlatent_avg']) if 'dlatent_avg' in s else None
    arch, variables = _assemble_generator(
        resolution, channels, mapping, const, layer, torgb, w_avg, z_dim, w_dim, lr_mul
    )
    return arch, variables, s.unused()


# ---------------------------------------------------------------------------------------------
# Discriminators.


def _assemble_discriminator(resolution, channels, conv: Callable, dense: Callable, mbstd_group_size=4):
    """conv(r, name) -> {'weight': HWIO[, 'bias']}; dense(name) -> {'weight': [in, out], 'bias'}."""
    params = {}
    for r in reversed(block_resolutions(resolution)[1:]):
        names = (['fromrgb'] if r == resolution else []) + ['conv0', 'conv1', 'skip']
        params[f'b{r}'] = {n: conv(r, n) for n in names}
    params['b4'] = {'conv': conv(4, 'conv'), 'fc': dense('fc'), 'out': dense('out')}
    if resolution == 4:
        params['b4']['fromrgb'] = conv(4, 'fromrgb')
    arch = dict(resolution=resolution, channels=tuple(int(c) for c in channels), mbstd_group_size=mbstd_group_size)
    return arch, {'params': params}


def import_nvidia_discriminator(state: dict, mbstd_group_size: int = 4, what='NVIDIA D'):
    s = _State(state, what)
    if 'mapping.fc0.weight' in s or 'b4.projection.weight' in s:
        raise StateError(f'{what}: class-conditional discriminators (c_dim > 0) are not supported')
    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'b(\d+)\.', k)] if m)
    res = block_resolutions(resolution)
    channels = [s['b4.conv.weight'].shape[0]] + [s[f'b{r}.conv0.weight'].shape[0] for r in res[1:]]

    def conv(r, name):
        p = {'weight': _conv(s[f'b{r}.{name}.weight'])}
        if name != 'skip':
            p['bias'] = _f32(s[f'b{r}.{name}.bias'])
        return p

    def dense(name):
        return {'weight': _dense(s[f'b4.{name}.weight']), 'bias': _f32(s[f'b4.{name}.bias'])}

    arch, variables = _assemble_discriminator(resolution, channels, conv, dense, mbstd_group_size)
    return arch, variables, s.unused()


def import_rosinality_discriminator(state: dict, what='rosinality D'):
    """rosinality `Discriminator.state_dict()`: convs.0 = fromRGB, convs.{1..} = ResBlocks, final_*."""
    s = _State(state, what)
    n_blocks = s.count(r'convs\.(\d+)\.conv1\.0\.weight')
    resolution = 4 * 2**n_blocks
    res = block_resolutions(resolution)
    channels = [s['final_conv.0.weight'].shape[0]] + [
        s[f'convs.{n_blocks - res.index(r) + 1}.conv1.0.weight'].shape[0] for r in res[1:]
    ]

    def conv(r, name):
        if name == 'fromrgb':
            return {'weight': _conv(s['convs.0.0.weight']), 'bias': _f32(s['convs.0.1.bias'])}
        if r == 4:
            return {'weight': _conv(s['final_conv.0.weight']), 'bias': _f32(s['final_conv.1.bias'])}
        p = f'convs.{n_blocks - res.index(r) + 1}'
        if name == 'conv0':
            return {'weight': _conv(s[f'{p}.conv1.0.weight']), 'bias': _f32(s[f'{p}.conv1.1.bias'])}
        if name == 'conv1':
            return {'weight': _conv(s[f'{p}.conv2.1.weight']), 'bias': _f32(s[f'{p}.conv2.2.bias'])}
        return {'weight': _conv(s[f'{p}.skip.1.weight'])}

    def dense(name):
        p = {'fc': 'final_linear.0', 'out': 'final_linear.1'}[name]
        return {'weight': _dense(s[f'{p}.weight']), 'bias': _f32(s[f'{p}.bias'])}

    arch, variables = _assemble_discriminator(resolution, channels, conv, dense)
    return arch, variables, s.unused()


def import_tf_discriminator(state: dict, mbstd_group_size: int = 4, what='TensorFlow D'):
    s = _State(state, what)
    resolution = max(int(m.group(1)) for k in state for m in [re.match(r'(\d+)x\1/', k)] if m)
    res = block_resolutions(resolution)
    channels = [s['4x4/Conv/weight'].shape[3]] + [s[f'{r}x{r}/Conv0/weight'].shape[3] for r in res[1:]]
    tf_names = {'fromrgb': 'FromRGB', 'conv0': 'Conv0', 'conv1': 'Conv1_down', 'skip': 'Skip', 'conv': 'Conv'}

    def conv(r, name):
        p = f'{r}x{r}/{tf_names[name]}'
        out = {'weight': _f32(s[f'{p}/weight'])}
        if name != 'skip':
            out['bias'] = _f32(s[f'{p}/bias'])
        return out

    def dense(name):
        p = {'fc': '4x4/Dense0', 'out': 'Output'}[name]
        return {'weight': _f32(s[f'{p}/weight']), 'bias': _f32(s[f'{p}/bias'])}

    arch, variables = _assemble_discriminator(resolution, channels, conv, dense, mbstd_group_size)
    return arch, variables, s.unused()


GENERATOR_IMPORTERS = {
    'rosinality-G': import_rosinality_generator,
    'nvidia-G': import_nvidia_generator,
    'tf-G': import_tf_generator,
}
DISCRIMINATOR_IMPORTERS = {
    'rosinality-D': import_rosinality_discriminator,
    'nvidia-D': import_nvidia_discriminator,
    'tf-D': import_tf_discriminator,
}
