"""One live training run per work dir.

Two runs in one work dir share its log and ``scalars.json`` and delete each other's
checkpoints (``max_keep_ckpts``). ``tools/train.py`` takes an exclusive ``flock`` on
``<work_dir>/.mmtlalign-run.lock`` (rank 0 only) for its whole life and writes who holds it
(host, PID, start time, command) into the file. The kernel drops the lock when the process
ends, however it ends, so a killed run leaves no stale lock: ``--resume`` just works.

The lock file is opened ``O_NOFOLLOW`` (:func:`mmtlalign.workdir.open_lock`): a symlink planted
under its name in a shared work dir is refused, never truncated through. Before the run, a work
dir other users can write gets a one-line warning, and a symlink where mmengine's Runner will
write is refused (:func:`mmtlalign.workdir.check_before_run`).
"""
import errno
import json
import os
import os.path as osp
import socket
import sys
import time
import warnings
from contextlib import contextmanager

from .. import workdir
from ..errors import UserInputError
from .messages import warn

LOCK_NAME = '.mmtlalign-run.lock'


class WorkDirBusyError(UserInputError):
    """Another live run is using the work dir."""


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 65536).decode() or '{}')
        # (another process wrote it: shown escaped, a newline in it starts no line of its own)
        return (f'host {workdir.shown(info.get("host", "?"), 60)}, PID '
                f'{workdir.shown(info.get("pid", "?"), 20)}, started '
                f'{workdir.shown(info.get("started", "?"), 40)}: '
                f'{workdir.shown(info.get("command", "?"), 300)}')
    except (OSError, ValueError, AttributeError):
        return 'a run whose lock record is unreadable'


@contextmanager
def hold_work_dir(work_dir):
    """Hold ``work_dir`` for the run inside, or raise :class:`WorkDirBusyError` naming the live
    run that holds it. A no-op on non-zero ranks and where ``fcntl`` is missing."""
    if os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) != '0':  # srun: no RANK yet
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    os.makedirs(work_dir, exist_ok=True)
    note = workdir.shared_access_note(work_dir)
    if note:
        warn(note)
    fd = workdir.open_lock(osp.join(work_dir, LOCK_NAME))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # the file system cannot lock (ENOLCK on some NFS mounts): run unguarded
                warnings.warn(f'cannot lock work dir {work_dir!r} ({os.strerror(e.errno)}; its '
                              'file system does not support flock): running without the '
                              'one-run-per-work-dir guard, so make sure no other run uses it.',
                              stacklevel=3)
                yield
                return
            raise WorkDirBusyError(
                f'work dir {work_dir!r} is in use by a live run ({_holder(fd)}); two runs in '
                'one work dir overwrite each other\'s logs and checkpoints. Wait for it or stop '
                'it, or give this run its own --work-dir.') from None
        record = dict(host=socket.gethostname(), pid=os.getpid(),
                      started=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
                      command=' '.join(sys.argv)[:500])
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        # mmengine's Runner writes its config dump, log folder and checkpoints with plain
        # open(): no symlink may stand where it will write (checked while we hold the lock)
        workdir.check_before_run(work_dir)
        yield
    finally:
        os.close(fd)  # releases the lock
