"""Baselines the few-shot method is measured against (paper Table 2's comparisons, in the toy world).

* `rgb_classifier`: a per-pixel MLP on RGB alone, trained on the same labelled shots as the head. It
  shows what colour can and cannot tell (toy left and right eyes look alike by design).
The other baseline, a UNet trained directly on k labelled *real* images with the auto-shot
augmentation (what the same labels buy without a GAN), is `gsd.nn.unet.train_simple`; the report
stage runs it as `supervised_<k>shot`.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax


class PixelMLP(nn.Module):
    num_classes: int
    hidden: tuple[int, ...] = (64, 64)

    @nn.compact
    def __call__(self, rgb):
        x = rgb.astype(jnp.float32) / 127.5 - 1.0
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


@functools.partial(jax.jit, static_argnames=('model', 'steps'))
def _fit_pixels(model, key, pixels, labels, *, steps: int, lr: float):
    params = model.init(key, pixels[:1])['params']
    tx = optax.adam(lr)

    def step(carry, _):
        params, opt = carry
        loss, g = jax.value_and_grad(
            lambda p: optax.softmax_cross_entropy_with_integer_labels(model.apply({'params': p}, pixels), labels).mean()
        )(params)
        updates, opt = tx.update(g, opt, params)
        return (optax.apply_updates(params, updates), opt), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params, losses


@dataclasses.dataclass(eq=False)
class RGBClassifier:
    model: PixelMLP
    params: dict

    def __call__(self, images_uint8) -> np.ndarray:
        """(N, H, W, 3) uint8 -> class ids (N, H, W)."""
        logits = jax.jit(self.model.apply)({'params': self.params}, jnp.asarray(images_uint8))
        return np.asarray(jnp.argmax(logits, -1))


def rgb_classifier(
    images_uint8, labels, num_classes: int, *, steps: int = 500, lr: float = 1e-2, seed: int = 0
) -> RGBClassifier:
    """Full-batch Adam on every labelled pixel of `images_uint8` (K, H, W, 3) / `labels` (K, H, W)."""
    model = PixelMLP(num_classes)
    pixels = jnp.asarray(np.asarray(images_uint8).reshape(-1, 3))
    params, losses = _fit_pixels(
        model, jax.random.key(seed), pixels, jnp.asarray(np.asarray(labels).reshape(-1)), steps=steps, lr=lr
    )
    if not np.isfinite(float(losses[-1])):
        raise FloatingPointError('rgb_classifier: training diverged')
    return RGBClassifier(model, params)
