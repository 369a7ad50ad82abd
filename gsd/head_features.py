"""The feature extractor a few-shot head reads, as a config's `fewshot` block describes it.

Shared by the `fewshot` stage and the annotator's assist (`gsd.annotate.assist`), so that the head the assist
trains while a person labels reads exactly the features the `fewshot` stage's head will.
"""

from __future__ import annotations

from typing import Any, Mapping

from gsd import features


def extractor_for(module, settings: Mapping[str, Any]) -> features.FeatureExtractor:
    """The feature extractor of `settings` (a `fewshot` block: layers by name, groups or range, feature size,
    upsampling, image channels) on the generator `module`."""
    layers = features.select_layers(
        module.resolution,
        layers=tuple(settings['layers']) if settings['layers'] else None,
        groups=settings['groups'] or None,
        res_range=tuple(settings['res_range']) if settings['res_range'] else None,
    )
    return features.FeatureExtractor(
        module,
        settings['feature_size'] or module.resolution,
        layers,
        settings['upsample'],
        settings['align_corners'],
        # Optional fields: configs written before them read as no image channels.
        image_channels=bool(settings.get('image_channels', False)),
        image_weight=float(settings.get('image_weight', 1.0)),
        contrast_weight=float(settings.get('contrast_weight', 0.0)),
        contrast_size=int(settings.get('contrast_size', 9)),
    )
