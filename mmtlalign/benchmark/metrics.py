"""A cell's metrics, read from the run's own outputs.

mmengine's ``LocalVisBackend`` appends one json line per logging event to
``<work_dir>/<timestamp>/vis_data/scalars.json``: training lines carry ``loss``, validation
lines the evaluator's keys (``accuracy/top1``, ``mIoU``, ``coco/bbox_mAP``...) and ``step``
(the epoch or iteration). A resumed run writes a new timestamp folder, so the last validation is
the last line with the key in the newest folder that has one.
"""
import glob
import json
import os.path as osp


def run_dirs(work_dir):
    """mmengine's timestamped run folders of ``work_dir``, oldest first."""
    dirs = [osp.dirname(osp.dirname(p))
            for p in glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))]
    return sorted(dirs, key=lambda d: (osp.basename(d), osp.getmtime(d)))


def read_scalars(run_dir):
    """(train lines, validation lines) of one run folder's scalars.json."""
    train, val = [], []
    with open(osp.join(run_dir, 'vis_data', 'scalars.json')) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill; the rest is valid
                continue
            (train if 'loss' in d or 'lr' in d else val).append(d)
    return train, val


def history(work_dir):
    """All scalars of a cell across its run folders (a resumed run continues an older one):
    (train lines, validation lines), each sorted by step, later folders winning on repeats."""
    train, val = {}, {}
    for d in run_dirs(work_dir):
        t, v = read_scalars(d)
        for line in t:
            train[line.get('step')] = line
        for line in v:
            val[line.get('step')] = line
    key = lambda item: (item[0] is None, item[0] or 0)  # noqa: E731
    return ([x for _, x in sorted(train.items(), key=key)],
            [x for _, x in sorted(val.items(), key=key)])


def last_validation(work_dir, metrics):
    """Each metric's value at the last validation that reported it.

    Args:
        work_dir (str): the cell's work dir.
        metrics (list[Metric]): what to read.

    Returns:
        dict: ``{metric.name: value * metric.scale}`` plus ``step`` (of the first metric);
        a metric never reported is missing.
    """
    _, val = history(work_dir)
    out = {}
    for m in metrics:
        hits = [line for line in val if m.key in line]
        if hits:
            out[m.name] = float(hits[-1][m.key]) * m.scale
            out.setdefault('step', hits[-1].get('step'))
    return out
