"""Every config loads (default and :smoke) and every model its stages build has consistent shapes."""

import importlib
import pathlib

import jax
import pytest

from gsd import pipeline

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py'))
CONFIGS = [p for p in CONFIGS if p.stem not in ('__init__', 'common')]


def load_config(path, arg=None):
    module = importlib.import_module(f'configs.{path.stem}')
    assert module.__doc__ and 'python -m gsd.main' in module.__doc__, f'{path.name}: docstring must give the command'
    return module.get_config(arg)


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize('arg', [None, 'smoke'])
@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_config_loads_and_builds(path, arg):
    config = load_config(path, arg)
    assert isinstance(config.seed, int)
    assert config.stages, 'a config must name its stages'
    for name in config.stages:
        for model_name, (module, args) in pipeline.get(name).models(config).items():
            variables = jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)
            out = jax.eval_shape(module.apply, variables, *args)
            assert jax.tree.leaves(out), f'{path.name}:{arg} {name}/{model_name} produced no output'


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_unknown_config_arg_is_refused(path):
    with pytest.raises(ValueError):
        load_config(path, 'no-such-variant')
