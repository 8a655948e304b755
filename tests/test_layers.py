"""The package's layering (``.importlinter``): layers point one way, no import cycles, and an
import hidden inside a function counts like any other. tools/ is not a package: its scripts
may import only public modules and names of mmtlalign."""
import ast
import glob
import os.path as osp
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT

LINT_IMPORTS = osp.join(osp.dirname(sys.executable), 'lint-imports')
CONFIG = osp.join(ROOT, '.importlinter')


def lint_imports(cwd):
    """``lint-imports`` on the ``mmtlalign`` package found in ``cwd``; (exit code, output)."""
    proc = subprocess.run([LINT_IMPORTS, CONFIG, '--no-cache'], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={'PATH': osp.dirname(sys.executable), 'PYTHONPATH': cwd})
    return proc.returncode, proc.stdout + proc.stderr


def test_the_package_keeps_its_import_contracts():
    rc, out = lint_imports(ROOT)
    assert rc == 0, out
    assert 'Contracts: 3 kept, 0 broken.' in out, out


#: (module to plant in, import statement inside a function, what the broken contract shows)
PLANTS = {
    'upward from evaluation': (
        'evaluation/results.py', 'from ..benchmark import report',
        'mmtlalign.evaluation.results -> mmtlalign.benchmark.report'),
    'the old COCO circle': (
        'cli/coco_check.py', 'from .launch import load_config',
        'No cycles are allowed in mmtlalign.cli'),
    'the old runner <-> stages circle': (
        'benchmark/cells.py', 'from .runner import run_suite',
        'mmtlalign.benchmark.cells -> mmtlalign.benchmark.runner'),
}


@pytest.mark.parametrize('plant', sorted(PLANTS))
def test_an_import_inside_a_function_breaks_a_contract(tmp_path, plant):
    """A copy of the package passes; with one import planted inside a function it fails,
    naming that import."""
    shutil.copytree(osp.join(ROOT, 'mmtlalign'), tmp_path / 'mmtlalign',
                    ignore=shutil.ignore_patterns('__pycache__', '.mim'))
    rc, out = lint_imports(str(tmp_path))
    assert rc == 0, out  # the copy as it is
    module, statement, shown = PLANTS[plant]
    with open(tmp_path / 'mmtlalign' / module, 'a') as f:
        f.write(f'\n\ndef _planted():\n    {statement}  # noqa: F401\n')
    rc, out = lint_imports(str(tmp_path))
    assert rc == 1, out
    assert 'BROKEN' in out and shown in out, out


def _public(module):
    return all(not part.startswith('_') for part in module.split('.'))


def _exists(module):
    """Whether the checkout holds ``module`` (found without importing the package)."""
    path = osp.join(ROOT, *module.split('.'))
    return osp.isfile(path + '.py') or osp.isfile(osp.join(path, '__init__.py'))


def bad_imports(source, where):
    """The ``mmtlalign`` imports of ``source`` (every one, at the top or inside a function)
    that name a private or missing module or a private name; and how many it has."""
    bad, seen = [], 0
    for node in ast.walk(ast.parse(source, where)):
        if isinstance(node, ast.Import):
            pairs = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            pairs = [(node.module, a.name) for a in node.names]
        else:
            continue
        for module, name in pairs:
            if module.split('.')[0] != 'mmtlalign':
                continue
            seen += 1
            if not _public(module) or (name and name.startswith('_')):
                bad.append(f'{where}:{node.lineno}: {module} {name or ""} is private')
            elif not _exists(module):
                bad.append(f'{where}:{node.lineno}: no module {module}')
    return bad, seen


def test_tools_import_only_public_modules_of_the_package():
    """tools/ are thin command lines over the package's public modules."""
    scripts = glob.glob(osp.join(ROOT, 'tools', '**', '*.py'), recursive=True)
    assert len(scripts) > 5
    bad, seen = [], 0
    for path in scripts:
        found, n = bad_imports(open(path, encoding='utf-8').read(), osp.relpath(path, ROOT))
        bad, seen = bad + found, seen + n
    assert seen > 20
    assert not bad, '\n'.join(bad)
    # the check itself: private modules and names, and modules that are not there
    planted = ('def main():\n    from mmtlalign.engine._loader import restart_train_iterator\n'
               'from mmtlalign.cli.launch import _slurm_env_to_torch_env\n'
               'import mmtlalign.benchmark.stages\nfrom mmtlalign.cli import launch\n')
    found, n = bad_imports(planted, 'planted.py')
    assert n == 4 and sorted(found) == [
        'planted.py:2: mmtlalign.engine._loader restart_train_iterator is private',
        'planted.py:3: mmtlalign.cli.launch _slurm_env_to_torch_env is private',
        'planted.py:4: no module mmtlalign.benchmark.stages'], found
