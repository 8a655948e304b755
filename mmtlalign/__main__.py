"""``python -m mmtlalign``: the version, where its configs and tools are, an environment report
(mmengine's ``collect_env``, plus the OpenMMLab packages and mmcv's compiled ops) and the
benchmark suites. Paste its output into a bug report.

    python -m mmtlalign            # everything
    python -m mmtlalign --verbose  # also PyTorch's build details
"""
import argparse
import glob
import importlib
import os.path as osp
from typing import Dict, List, Optional

from mmengine.utils.dl_utils import collect_env

import mmtlalign
from mmtlalign.benchmark.demo import MAIN_JOB_ARMS, SUITE
from mmtlalign.benchmark.suite import SUITE_DIR, load_suite
from mmtlalign.paths import project_root


def _version(module: str) -> str:
    try:
        return importlib.import_module(module).__version__
    except Exception as e:  # not installed, or fails to import: say why
        return f'not available ({type(e).__name__}: {e})'.splitlines()[0]


def _mmcv_ops() -> str:
    try:  # mmcv's compiled ops may be missing or broken: the report says why
        from mmcv.ops import get_compiler_version, get_compiling_cuda_version
    except Exception as e:
        return f'missing ({type(e).__name__}: {e}; see README "Installation")'.splitlines()[0]
    cuda = get_compiling_cuda_version()
    return (f'compiled with {get_compiler_version()}, CUDA ops: '
            f'{"yes (CUDA " + cuda + ")" if cuda not in ("not available", "") else "no"}')


def environment(verbose: bool = False) -> Dict[str, str]:
    """mmengine's ``collect_env`` (Python, PyTorch, CUDA, GPUs, compilers, OpenCV, MMEngine)
    plus mmcv with its ops, mmpretrain, mmdet, mmsegmentation and timm."""
    env = {k: str(v) for k, v in collect_env().items()}
    if not verbose:
        env.pop('PyTorch compiling details', None)
    env['MMCV'] = _version('mmcv')
    env['MMCV ops'] = _mmcv_ops()
    env['MMPreTrain'] = _version('mmpretrain')
    env['MMDetection'] = _version('mmdet')
    env['MMSegmentation'] = _version('mmseg')
    return env


def suites() -> List[Dict[str, object]]:
    """The benchmark suites of ``configs/benchmarks/``: name, arms, seeds, downstream tasks,
    and for the main job's suite the arms it runs (``main_job``)."""
    found = []
    for path in sorted(glob.glob(osp.join(SUITE_DIR, '*.py'))):
        name = osp.splitext(osp.basename(path))[0]
        try:
            suite = load_suite(path)
        except Exception as e:  # a suite that does not load is listed with the reason
            found.append(dict(name=name, error=f'{type(e).__name__}: {e}'.splitlines()[0]))
            continue
        found.append(dict(name=name, arms=[a.label for a in suite.arms], seeds=suite.seeds,
                          downstream=[s.label for s in suite.downstream]))
        if osp.samefile(path, SUITE):
            found[-1]['main_job'] = [a.label for a in suite.arms if a.name in MAIN_JOB_ARMS]
    return found


def report(verbose: bool = False) -> str:
    lines = [f'mmtlalign {mmtlalign.__version__}',
             f'  package: {osp.dirname(osp.abspath(mmtlalign.__file__))}']
    try:
        lines.append(f'  configs and tools: {project_root()}')
    except Exception as e:
        lines.append(f'  configs and tools: not found ({e})')
    lines += ['', 'Environment:']
    env = environment(verbose)
    width = max(map(len, env))
    for key, value in env.items():
        first, *rest = value.splitlines() or ['']
        lines.append(f'  {key.ljust(width)}  {first}')
        lines += [f'  {"".ljust(width)}  {line}' for line in rest]
    lines += ['', 'Benchmark suites (python tools/benchmark.py NAME; configs/benchmarks/):']
    for suite in suites():
        if 'error' in suite:
            lines.append(f'  {suite["name"]}: does not load ({suite["error"]})')
            continue
        down = f'; downstream: {", ".join(suite["downstream"])}' if suite['downstream'] else ''
        lines.append(f'  {suite["name"]:<18} {len(suite["arms"])} arms x {len(suite["seeds"])} '
                     f'seeds ({", ".join(suite["arms"])}){down}')
        if suite.get('main_job'):
            lines.append(f'  {"":<18} the main job (tools/run_demo.sh) runs '
                         f'{len(suite["main_job"])} of them ({", ".join(suite["main_job"])}); '
                         'the others with tools/demo.py --arms')
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m mmtlalign',
        description='mmtlalign version, environment report and benchmark suites.')
    parser.add_argument('--verbose', action='store_true', help="also PyTorch's build details")
    args = parser.parse_args(argv)
    print(report(args.verbose))


if __name__ == '__main__':
    main()
