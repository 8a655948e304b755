"""Benchmark suites: arms × seeds (× downstream stages), run like tools/train.py, aggregated
with paired confidence intervals. ``tools/benchmark.py`` is the command line."""
from .cells import Cell, plan_cells
from .launch import Launcher
from .report import aggregate, table_rows, text_table, verdict, write_all
from .runner import run_suite
from .stats import mean_std, paired_difference, t_quantile
from .suite import Arm, Metric, Stage, Suite, load_suite

__all__ = [
    'Arm', 'Cell', 'Launcher', 'Metric', 'Stage', 'Suite', 'aggregate', 'load_suite',
    'mean_std', 'paired_difference', 'plan_cells', 'run_suite', 't_quantile', 'table_rows',
    'text_table', 'verdict', 'write_all'
]
