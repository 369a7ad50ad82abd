"""The package's map holds: no import circles, building blocks never import a pipeline stage, a stage never
imports another stage, no module reaches into another's private names, nothing is loaded by file path."""

import ast
import pathlib

import pytest
from conftest import REPO

PACKAGE = REPO / 'gsd'


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob('*.py'))}


def _imports(path: pathlib.Path):
    """(imported gsd module, names taken from it) for every import in the file, function-level ones included."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('gsd'):
                    yield a.name, []
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('gsd'):
            for a in node.names:
                sub = f'{node.module}.{a.name}'
                # `from gsd.pkg import mod` imports a module; `from gsd.mod import name` a name.
                yield (sub, []) if sub in MODULES else (node.module, [a.name])


def _graph() -> dict:
    return {name: {m for m, _ in _imports(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def _is_stage(name: str) -> bool:
    return name.startswith('gsd.pipeline.')


def test_no_import_circles():
    graph = _graph()
    # Tarjan-free: a module is in a circle when it can reach itself.
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            assert m != start, f'{start} imports itself through {sorted(seen)}'
            if m not in seen:
                seen.add(m)
                todo.extend(graph.get(m, ()))


def test_building_blocks_never_import_stages_and_stages_never_import_each_other():
    for name, deps in _graph().items():
        if name in ('gsd.main', 'gsd.pipeline'):
            continue
        stages = {d for d in deps if _is_stage(d)}
        assert not stages, f'{name} imports pipeline stage(s) {sorted(stages)}'
        if not _is_stage(name):
            assert 'gsd.main' not in deps and 'gsd.pipeline' not in deps, f'{name} imports the pipeline'


def test_no_private_names_across_modules():
    for name, path in MODULES.items():
        for module, names in _imports(path):
            private = [n for n in names if n.startswith('_') and n != '__version__']
            assert not private, f'{name} imports private {private} from {module}'


@pytest.mark.parametrize('folder', ['gsd', 'configs', 'tests', 'tools'])
def test_nothing_is_loaded_by_file_path(folder):
    needle = 'spec_from_' + 'file_location'  # split so this file does not match itself
    hits = [str(p.relative_to(REPO)) for p in (REPO / folder).rglob('*.py') if needle in p.read_text()]
    assert not hits, hits


def test_the_layer_sees_every_stage():
    from gsd import pipeline

    for stage in pipeline.STAGES:
        assert f'gsd.pipeline.{stage}' in MODULES, stage
