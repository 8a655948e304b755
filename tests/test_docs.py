"""The documentation: the Sphinx site (docs/en) builds with warnings as errors, and every shell
command that the README and the docs show names a tool, script, config and option that exists.

A command is checked by what it names: ``python tools/X.py ARGS`` parses ARGS with the tool's
own argument parser (so options, choices and value types are the tool's); the shell launchers
hand their extra arguments to the tool they start, after their positional ones; ``configs/...``
and ``mmtlalign::`` config names must exist; ``pytest -m`` markers must be declared. A command
that none of these rules knows fails the test: a new kind of command needs a rule here.
"""
import contextlib
import glob
import importlib.util
import io
import os
import os.path as osp
import re
import runpy
import shlex
import sys

import pytest

from helpers import PY, ROOT, load_tool, ok, run_tool

DOCS = osp.join(ROOT, 'docs', 'en')
PAGES = sorted([osp.join(ROOT, 'README.md'), osp.join(ROOT, 'CONTRIBUTING.md'),
                osp.join(ROOT, 'CHANGELOG.md')]
               + glob.glob(osp.join(DOCS, '**', '*.md'), recursive=True))

#: paths that exist on one machine only (a checkout, a home, a scratch folder)
MACHINE_PATH = re.compile(r'(?<![\w.~-])/(?:work|root|tmp|home|Users|mnt|scratch)(?:/|\b)')

#: shell launchers: the Python tool that gets their arguments, and the positions of the
#: arguments they keep for themselves (GPUS, PARTITION, JOB_NAME, WORK_DIR)
LAUNCHERS = {
    'tools/run_demo.sh': ('tools/demo.py', ()),
    'tools/dist_train.sh': ('tools/train.py', (1,)),          # CONFIG GPUS
    'tools/dist_test.sh': ('tools/test.py', (2,)),            # CONFIG CKPT GPUS
    'tools/slurm_train.sh': ('tools/train.py', (0, 1, 3)),    # PARTITION JOB CONFIG WORK_DIR
    'tools/slurm_test.sh': ('tools/test.py', (0, 1)),         # PARTITION JOB CONFIG CKPT
}
#: scripts whose options are the labels of their own `case` statement
CASE_SCRIPTS = ('tools/setup_env.sh', 'tools/gpu_check.sh')
#: other programs a page may show, with nothing of ours to check beyond the paths they name
EXTERNAL = {'pip', 'source', 'tensorboard', '.venv/bin/pre-commit', '.venv/bin/ruff',
            '.venv/bin/lint-imports'}


def shell_commands(path):
    """(line number, command) of every command in the page's ```bash blocks."""
    text = open(path, encoding='utf-8').read()
    found = []
    for block in re.finditer(r'^```(?:bash|sh|shell|console)\n(.*?)^```', text, re.M | re.S):
        start = text.count('\n', 0, block.start(1)) + 1
        command, first = '', None
        for i, line in enumerate(block.group(1).splitlines()):
            first = start + i if first is None else first
            command += line[:-1] + ' ' if line.endswith('\\') else line
            if not line.endswith('\\'):   # the end of a command (a continuation goes on)
                if shlex.split(command, comments=True):
                    found.append((first, command))
                command, first = '', None
    return found


ALL_COMMANDS = [(osp.relpath(p, ROOT), n, c) for p in PAGES for n, c in shell_commands(p)]


def config_exists(name):
    """A config named on a command line: a path, or ``mmtlalign::`` + a path or unique name."""
    if name.startswith('mmtlalign::'):
        rel = name[len('mmtlalign::'):]
        if osp.isfile(osp.join(ROOT, 'configs', rel)):
            return True
        return len(glob.glob(osp.join(ROOT, 'configs', '**', rel), recursive=True)) == 1
    return osp.isfile(osp.join(ROOT, name))


def check_paths(tokens):
    """Every token that names a file of the repository (or a config by scope) exists."""
    for token in tokens:
        value = token.split('=', 1)[1] if token.startswith('--') and '=' in token else token
        if value.startswith(('configs/', 'tools/', 'tests/', 'docs/', 'mmtlalign::')):
            assert config_exists(value) or osp.exists(osp.join(ROOT, value)), \
                f'{value} does not exist'


def parse_with_tool(tool, args):
    """Parse ``args`` with the tool's own argparse parser; fail with its error message."""
    module = load_tool(tool)
    # tools/analysis/*.py are thin: their parser is in the package module that holds main()
    parse = getattr(module, 'parse_args', None) or sys.modules[module.main.__module__].parse_args
    err, local_rank = io.StringIO(), os.environ.get('LOCAL_RANK')
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parse(args)
    except SystemExit as e:
        if e.code not in (0, None):
            pytest.fail(f'{tool} refuses {args}: {err.getvalue().strip().splitlines()[-1]}')
    finally:  # tools/train.py's parser sets LOCAL_RANK for the launcher; keep this process clean
        if local_rank is None:
            os.environ.pop('LOCAL_RANK', None)
        else:
            os.environ['LOCAL_RANK'] = local_rank


def check_command(line):
    tokens = shlex.split(line, comments=True)
    while tokens and re.match(r'^[A-Z_][A-Z0-9_]*=', tokens[0]):   # VAR=value prefixes
        tokens.pop(0)
    assert tokens, 'only variable assignments'
    # sphinx's last argument is the folder it writes
    check_paths(tokens[:-1] if tokens[1:3] == ['-m', 'sphinx'] else tokens)
    if tokens[0] == 'bash':
        tokens.pop(0)
    head, args = tokens[0], tokens[1:]
    if head in ('python', '.venv/bin/python'):
        if args[:2] == ['-m', 'mmtlalign']:
            assert args == ['-m', 'mmtlalign'], 'python -m mmtlalign takes no arguments'
        elif args[:2] == ['-m', 'pytest']:
            check_pytest_args(args[2:])
        elif args[:2] == ['-m', 'sphinx']:
            assert 'docs/en' in args, 'the docs source is docs/en'
        else:
            assert args and args[0].startswith('tools/') and args[0].endswith('.py'), \
                'python runs a tool of tools/'
            if args[0] == 'tools/benchmark.py' and not args[1].endswith('.py'):
                assert osp.isfile(osp.join(ROOT, 'configs', 'benchmarks', args[1] + '.py')), \
                    f'no suite configs/benchmarks/{args[1]}.py'
            parse_with_tool(args[0], args[1:])
    elif head in LAUNCHERS:
        tool, own = LAUNCHERS[head]
        parse_with_tool(tool, [a for i, a in enumerate(args) if i not in own])
    elif head == 'tools/run_tests.sh':
        check_pytest_args(args)
    elif head in CASE_SCRIPTS:
        script = open(osp.join(ROOT, head), encoding='utf-8').read()
        for opt in (a for a in args if a.startswith('--')):
            assert re.search(re.escape(opt) + r'[)|]', script), f'{head} has no option {opt}'
    elif head == 'mim' and args[:2] == ['run', 'mmpretrain']:   # mmpretrain's tool scripts
        tools = osp.join(osp.dirname(importlib.util.find_spec('mmpretrain').origin), '.mim',
                         'tools')
        assert args[2:] and glob.glob(osp.join(tools, '**', args[2] + '.py'), recursive=True), \
            f'mmpretrain has no tool {args[2:3]}'
    elif head == 'mim':
        assert args[:2] in (['train', 'mmtlalign'], ['test', 'mmtlalign']), \
            'mim train|test mmtlalign'
        assert glob.glob(osp.join(ROOT, 'configs', '**', args[2]), recursive=True), \
            f'no config {args[2]} in configs/'
    else:
        assert head in EXTERNAL, f'no rule in tests/test_docs.py knows the command {head!r}'


def check_pytest_args(args):
    markers = re.findall(r'^\s+(\w+):', open(osp.join(ROOT, 'pytest.ini')).read(), re.M)
    for i, arg in enumerate(args):
        if arg == '-m':
            words = set(re.findall(r'\w+', args[i + 1])) - {'not', 'and', 'or'}
            assert words <= set(markers), f'undeclared markers {words - set(markers)}'
        elif arg.startswith('tests/'):
            assert osp.exists(osp.join(ROOT, arg.split('::')[0])), f'{arg} does not exist'


def test_pages_show_commands():
    """The checker sees the commands (an extraction that finds none would pass anything)."""
    pages = {page for page, _, _ in ALL_COMMANDS}
    assert {'README.md', 'docs/en/get_started.md', 'docs/en/user_guides/cluster.md'} <= pages
    readme = [c for page, _, c in ALL_COMMANDS if page == 'README.md']
    assert 'bash tools/run_demo.sh' in readme[0] and 'bash tools/run_tests.sh' in readme[1]


def test_every_shown_command_names_what_exists():
    errors = []
    for page, line, command in ALL_COMMANDS:
        try:
            check_command(command)
        except (AssertionError, pytest.fail.Exception) as e:
            errors.append(f'{page}:{line}: {command.strip()}\n    {str(e).splitlines()[0]}')
    assert not errors, '\n'.join(errors)


def test_the_checker_refuses_what_does_not_exist():
    """Each rule fails on a command it must refuse."""
    wrong = [
        'python tools/train.py configs/tlalign/deit-s_8xb128.py --no-such-option',
        'python tools/train.py configs/tlalign/no_such_config.py',
        'python tools/benchmark.py no_such_suite --gpus 8',
        'bash tools/run_demo.sh --arms cutmix nosucharm',
        'GPUS=8 tools/slurm_train.sh P J configs/tlalign/deit-s_8xb128.py work_dirs/x --amp2',
        'bash tools/setup_env.sh --no-such-flag',
        'bash tools/run_tests.sh -m "not slowest"',
        'mim train mmtlalign no_such_config.py',
        'mim run mmpretrain no_such_tool configs/tlalign/deit-s_8xb128.py',
        'python tools/train.py mmtlalign::no_such_config.py',
        'rm -rf work_dirs',
    ]
    for command in wrong:
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            check_command(command)


def test_no_machine_specific_paths():
    bad = [f'{osp.relpath(p, ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}'
           for p in PAGES for text in [open(p, encoding='utf-8').read()]
           for m in MACHINE_PATH.finditer(text)]
    assert not bad, bad


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors(tmp_path):
    ok(run_tool([PY, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html', DOCS,
                 str(tmp_path)], timeout=600))
    api = (tmp_path / 'api.html').read_text()
    # every module of the package is on the API page (conf.py appends those api.md lacks) ...
    modules = runpy.run_path(osp.join(DOCS, 'conf.py'))['package_modules']()
    assert len(modules) > 40 and not [m for m in modules if f'id="module-{m}"' not in api]
    # ... and autodoc imported the real package: the components' docstrings are there
    for name in ('TLAlignClassifier', 'AlignedSwinTransformer', 'attention_with_share',
                 'load_checkpoint_file'):
        assert name in api, name
    assert 'Unreleased' in (tmp_path / 'changelog.html').read_text()
