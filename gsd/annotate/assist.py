"""The annotator's assist: the configured head trained on the shots labelled so far, predicting the others.

The head and its features are the `fewshot` stage's (the same extractor, head, optimiser and seed, through
`gsd.nn.heads.train_heads`), trained for fewer epochs so that the person waits seconds, not minutes. The
shots' activations are computed once, on the first call, and kept: later calls only train and predict.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from gsd import errors


class Assistant:
    """`assistant(labels, train, targets)` -> {shot index: (H, W) uint8 predicted class ids} for `targets`.

    load: () -> (feature extractor, generator variables, head module), called once, on the first request
      (building the generator takes a while: the annotator starts serving without waiting for it).
    ws: (K, num_ws, w_dim), the shots' w+ (WORKDIR/shots/latents.npz).
    labels: (K, H, W) int32, the labelled shots' ids at their indices; train: the indices to train on.
    The rest are the `fewshot` block's training settings; `seed` is the run's seed (keys as the stage's).
    """

    def __init__(
        self,
        load: Callable[[], tuple],
        ws: np.ndarray,
        *,
        seed: int,
        ensemble: int,
        epochs: int,
        lr: float,
        weight_decay: float,
        lr_decay_every: int,
        lr_decay_factor: float,
        batch_size: int,
        feature_dtype: str,
    ):
        self._load, self._ws = load, np.asarray(ws)
        self._seed, self._ensemble, self._epochs = int(seed), int(ensemble), int(epochs)
        self._optimiser = dict(
            lr=lr,
            weight_decay=weight_decay,
            lr_decay_every=lr_decay_every,
            lr_decay_factor=lr_decay_factor,
            batch_size=batch_size,
        )
        self._feature_dtype = feature_dtype
        self._head = self._acts = None

    def _prepare(self, size: int) -> None:
        import jax.numpy as jnp

        extractor, variables, head = self._load()
        if extractor.out_size != size:
            raise errors.SettingError(
                f'fewshot.feature_size: the head predicts at {extractor.out_size} px, the shots are {size} px'
            )
        self._acts = extractor.stored_activations(
            variables, jnp.asarray(self._ws), batch_size=1, dtype=self._feature_dtype
        )
        self._head = head

    def __call__(self, labels: np.ndarray, train: list, targets: list) -> dict:
        import jax

        from gsd.nn import heads

        if self._acts is None:
            self._prepare(labels.shape[1])
        keys = jax.random.split(jax.random.key(self._seed + 1), self._ensemble)
        params, losses = heads.train_heads(
            self._head,
            keys,
            self._acts,
            np.asarray(labels, np.int32),
            epochs=self._epochs,
            image_indices=np.broadcast_to(np.asarray(train, np.int32), (self._ensemble, len(train))),
            **self._optimiser,
        )
        final = np.asarray(losses)[:, -1]
        if not np.all(np.isfinite(final)):
            raise FloatingPointError(
                f'fewshot.lr: the assist head diverged at lr {self._optimiser["lr"]} (final losses {final})'
            )
        out = {}
        for i in targets:
            one = jax.tree.map(lambda a: a[i : i + 1], self._acts)  # one shape for every shot: one compile
            logits = heads.predict(self._head, params, one)  # (M, 1, S, S, K)
            probabilities = jax.nn.softmax(logits, axis=-1).mean(axis=0)[0]
            out[i] = np.asarray(probabilities.argmax(-1), np.uint8)
        return out
