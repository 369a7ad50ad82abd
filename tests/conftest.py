"""Shared test set-up: CPU only, the StyleGAN2 reference fixtures shipped in tests/fixtures/stylegan2."""

import os
import pathlib
import sys

import numpy as np

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, str(pathlib.Path(__file__).parent))

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures' / 'stylegan2'  # provenance and layout: its README.md


TOL = 1e-4  # parity tolerance: max abs error, float32 on CPU


def nchw(x):
    """NHWC (gsd) -> NCHW (the reference fixtures)."""
    return np.asarray(x).transpose(0, 3, 1, 2)


def close(a, b, tol=TOL):
    """Assert equal shapes and max abs error <= tol; returns the error."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.abs(a - b).max())
    assert err <= tol, f'max abs error {err:.3g} > {tol}'
    return err
