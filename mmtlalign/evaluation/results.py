"""The result file of one evaluation stage: ``<work dir>/<stage>.json``.

It holds ``status`` (``done``, or ``missing`` when the stage's dataset is not there), the
``settings`` that make two evaluations the same (:func:`stage_settings`), and for a finished
stage its metrics, curves, number of images and wall time. ``tools/analysis/evaluate.py``
writes it (:mod:`mmtlalign.evaluation.cli`); the benchmark reads it back to skip finished
stages and to collect their numbers (:mod:`mmtlalign.benchmark.evaluations`).

Written and read through :mod:`mmtlalign.workdir` (never through a link; owned by this user;
checked against :data:`RESULT_SCHEMA`, else a one-line error naming the file to delete).
"""
import json
import os
import os.path as osp

from .. import workdir as wd
from ..cli.cfg_options import format_value

RESULT_SUFFIX = '.json'
RESULT_SCHEMA = {'status': wd.one_of('done', 'missing'), 'settings': wd.is_dict,
                 'metrics?': wd.dict_of(wd.optional(wd.is_number)), 'curves?': wd.is_dict,
                 'num_images?': wd.optional(wd.is_int), 'wall_s?': wd.optional(wd.is_number),
                 'reason?': wd.is_str, 'created?': wd.is_line}


def checkpoint_stamp(path):
    """What identifies a checkpoint file: absolute path, size, modification time."""
    st = os.stat(path)
    return dict(path=osp.abspath(path), size=st.st_size, mtime=int(st.st_mtime))


def stage_settings(stage, config, checkpoint, options):
    """What makes two evaluations the same: the stage, the config, its options (as the
    command line spells them, so the benchmark and the tool compare equal) and the
    checkpoint file."""
    options = {k: format_value(v) for k, v in (options or {}).items()}
    return json.loads(json.dumps(dict(spec=stage.spec(), config=osp.abspath(config),
                                      options=options,
                                      checkpoint=checkpoint_stamp(checkpoint)), default=str))


def result_path(work_dir, stage_name):
    return osp.join(work_dir, stage_name + RESULT_SUFFIX)


def read_result(work_dir, stage_name):
    """The checked result file of a stage, or None."""
    return wd.read_json(result_path(work_dir, stage_name), RESULT_SCHEMA,
                        what='evaluation result', fix='delete it to evaluate that stage again')


def write_result(work_dir, stage_name, data):
    wd.write_json(result_path(work_dir, stage_name), data, indent=2, default=float)
