"""Benchmark suites: arms × seeds (× downstream tasks, + evaluation stages), run like
tools/train.py, aggregated with paired confidence intervals. ``tools/benchmark.py`` is the
command line.

The modules, from the top: :mod:`.runner` (plan -> train -> evaluate -> aggregate -> write),
:mod:`.demo` (the main job); :mod:`.slurm` (every cell a batch job), :mod:`.evaluations`
(evaluation stages on finished cells), :mod:`.report` (aggregation, tables, summaries) and
:mod:`.plots` (``results.png``); :mod:`.launch` (one training process), :mod:`.cells` (cells,
their work dirs and markers), :mod:`.metrics` (a run's scalars), :mod:`.suite` (suite files),
:mod:`.stats` (paired intervals).
"""
from .cells import Cell, plan_cells
from .launch import Launcher
from .report import aggregate, table_rows, text_table, verdict, write_all
from .runner import SuiteRun, run_suite
from .stats import mean_std, paired_difference, t_quantile
from .suite import Arm, Downstream, EvalStage, Metric, Suite, load_suite

__all__ = [
    'Arm', 'Cell', 'Downstream', 'EvalStage', 'Launcher', 'Metric', 'Suite', 'SuiteRun',
    'aggregate', 'load_suite', 'mean_std', 'paired_difference', 'plan_cells', 'run_suite',
    't_quantile', 'table_rows', 'text_table', 'verdict', 'write_all'
]
