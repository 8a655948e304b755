"""Sphinx configuration of the mmtlalign documentation (MyST Markdown, as the OpenMMLab projects).

    .venv/bin/python -m sphinx -W --keep-going -b html docs/en docs/en/_build/html

``tests/test_docs.py`` builds it this way, warnings as errors. The API reference imports the real
package (autodoc), so build it in the project's environment.
"""
import glob
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, ROOT)


def _version():
    """The package version, read from ``mmtlalign/version.py`` without importing the package."""
    scope = {}
    with open(osp.join(ROOT, 'mmtlalign', 'version.py'), encoding='utf-8') as f:
        exec(f.read(), scope)
    return scope['__version__']


project = 'mmtlalign'
author = 'The mmtlalign contributors'
copyright = '2026, The mmtlalign contributors'  # noqa: A001  (Sphinx's own setting name)
version = release = _version()

extensions = [
    'myst_parser',
    'sphinx.ext.autodoc',
    'sphinx.ext.napoleon',
    'sphinx.ext.viewcode',
]
source_suffix = {'.md': 'markdown'}
root_doc = 'index'
exclude_patterns = ['_build']

# "#some-heading" links inside and across pages, as on GitHub
myst_heading_anchors = 3
myst_enable_extensions = ['colon_fence']

# API reference: the docstrings of the real package (Google style, with tensor shapes)
autodoc_member_order = 'bysource'
autodoc_default_options = {'members': True, 'show-inheritance': True}
autodoc_typehints = 'description'
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = 'furo'
html_title = f'mmtlalign {release}'


def package_modules():
    """Every public module of mmtlalign, by dotted name (``utils`` is a deprecated alias)."""
    names = set()
    for path in glob.glob(osp.join(ROOT, 'mmtlalign', '**', '*.py'), recursive=True):
        name = osp.relpath(path, ROOT)[:-3].replace(osp.sep, '.')
        if not re.search(r'\._|\.version$|^mmtlalign\.utils\.', name):
            names.add(name)
    return sorted(names)


def list_unlisted_modules(app, docname, source):
    """Append to the API page every module that it does not list yet, so that a new module is
    in the reference from its first commit (it belongs in a group of api.md)."""
    if docname != 'api':
        return
    listed = set(re.findall(r'^\.\. automodule:: (\S+)', source[0], re.M))
    missing = [name for name in package_modules() if name not in listed]
    if missing:
        source[0] += '\n## Other modules\n\n' + ''.join(
            f'### {name}\n\n```{{eval-rst}}\n.. automodule:: {name}\n```\n\n' for name in missing)


def setup(app):
    app.connect('source-read', list_unlisted_modules)
