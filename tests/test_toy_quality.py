"""gsd.toy.quality (tools/toy_quality.py): a generator's samples under the scripted annotator."""

import jax
import jax.numpy as jnp
import numpy as np

from gsd import stylegan2, toy
from gsd.toy import quality


def test_random_generator_is_refused_and_shares_are_reported(tmp_path):
    g = stylegan2.Generator(64, (16,) * 5, z_dim=16, w_dim=16, n_mlp=1)
    variables = jax.jit(g.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
    stylegan2.save(tmp_path / 'g', {'G_ema': (g, variables)})
    result = quality.measure(tmp_path / 'g', num=6, psi=0.7)
    assert result['acceptance'] == 0.0 and sum(result['refusals'].values()) == 6
    assert not result['meets_targets']
    assert np.isclose(sum(result['share_real'].values()), 1.0)
    assert set(result['share_real']) == set(toy.CLASSES)


def test_real_toy_images_meet_the_targets():
    images, masks = toy.sample(40, seed=7)
    annotated = [toy.annotate(img) for img in images]
    accepted = [m for m in annotated if m is not None]
    assert len(accepted) / len(images) >= 0.9
    rel = quality.class_shares(accepted) / quality.class_shares(masks) - 1
    assert np.all(np.abs(rel) <= 0.2), rel


def test_shipped_generator_meets_the_acceptance_target():
    """The generator in the package (gsd.toy.pretrained) against issue 3's target, on 100 samples
    (tools/toy_quality.py measures the full 1000 for the record: 98.5%)."""
    from gsd.toy import PRETRAINED_DIR

    result = quality.measure(PRETRAINED_DIR, num=100, psi=0.7)
    assert result['acceptance'] >= 0.9, result['refusals']
