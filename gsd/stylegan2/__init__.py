"""StyleGAN2 in Flax: networks, safe loaders of every public checkpoint format, and gsd's own format."""

from gsd.stylegan2.loading import LoadError, load, read_networks, save
from gsd.stylegan2.networks import (
    Discriminator,
    Generator,
    block_resolutions,
    capture_activations,
    channels_nvidia,
    channels_rosinality,
    layer_names,
    noise_layer_names,
    num_ws,
)
from gsd.stylegan2.readers import CheckpointError

__all__ = [
    'CheckpointError',
    'Discriminator',
    'Generator',
    'LoadError',
    'block_resolutions',
    'capture_activations',
    'channels_nvidia',
    'channels_rosinality',
    'layer_names',
    'load',
    'noise_layer_names',
    'num_ws',
    'read_networks',
    'save',
]
