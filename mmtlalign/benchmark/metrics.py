"""A cell's metrics, read from the run's own outputs.

mmengine's ``LocalVisBackend`` appends one json line per logging event to
``<work_dir>/<timestamp>/vis_data/scalars.json``: training lines carry ``loss``, validation
lines the evaluator's keys (``accuracy/top1``, ``mIoU``, ``coco/bbox_mAP``...) and ``step``
(the epoch or iteration). A resumed run writes a new timestamp folder, so the last validation is
the last line with the key in the newest folder that has one.

They are read once, when the run has just ended (the benchmark then records them in the cell's
marker, :mod:`.cells`), and only from run folders that are real folders owned by this user,
``scalars.json`` opened without following a link (:mod:`mmtlalign.workdir`): a folder planted
in a shared work dir (say ``99991231_235959/``) is not read.
"""
import json
import os
import os.path as osp

from .. import workdir

#: scalars.json of a long run: many MB of json lines
SCALARS_LIMIT = 1 << 30


def run_dirs(work_dir):
    """mmengine's timestamped run folders of ``work_dir`` that this user made, oldest first."""
    dirs = []
    try:
        entries = list(os.scandir(work_dir))
    except OSError:
        return []
    for entry in entries:
        if not workdir.RUN_FOLDER.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        if st.st_uid != os.geteuid():
            continue
        if osp.lexists(osp.join(entry.path, 'vis_data', 'scalars.json')):
            dirs.append((entry.name, st.st_mtime, entry.path))
    return [d for _, _, d in sorted(dirs)]


def read_scalars(run_dir):
    """(train lines, validation lines) of one run folder's scalars.json."""
    train, val = [], []
    data = workdir.read_bytes(osp.join(run_dir, 'vis_data', 'scalars.json'), root=run_dir,
                              limit=SCALARS_LIMIT) or b''
    for line in data.decode('utf-8', 'replace').splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill; the rest is valid
            continue
        if isinstance(d, dict):
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
        if hits and workdir.is_number(hits[-1][m.key]):
            out[m.name] = float(hits[-1][m.key]) * m.scale
            step = hits[-1].get('step')
            out.setdefault('step', step if workdir.is_int(step) else None)
    return out
