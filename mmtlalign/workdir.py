"""Writing into and reading back from work dirs: a work dir is input, not trusted state.

On a shared cluster file system anyone who can write a work dir (the project group, often) can
plant a file, a record or a symlink there before the tools run again. Every write of the tools
into a work dir goes through this module, which never follows a symlink:

- a whole file (record, script, report) is written to a temporary file created
  ``O_CREAT|O_EXCL|O_NOFOLLOW`` under a fresh random name in the same folder, then renamed over
  the final name (``os.replace`` replaces a planted link itself, it never writes through it);
- a log or a lock is opened ``O_NOFOLLOW`` (``O_APPEND`` for logs) and must be a regular file
  with one link (no hard link to someone else's file);
- folders below the work dir are made and entered one component at a time with
  ``O_NOFOLLOW|O_DIRECTORY``, so a symlinked folder inside the work dir is refused too.

Records read back (:func:`read_json`, :func:`read_last_checkpoint`) are opened ``O_NOFOLLOW``,
size-capped, must be regular files owned by the user running the tools, and are checked against
a schema; anything else is a one-line :class:`WorkDirError` naming the file and what to delete.
Untrusted text is only ever shown through :func:`shown` (``repr``, cut short): a planted newline
cannot start a line of its own in a log.

Stdlib only (plus :mod:`mmtlalign.errors`), so that every layer may use it, and the Slurm job
script can load it without importing torch.
"""
import errno
import hashlib
import io
import json
import math
import os
import os.path as osp
import re
import secrets
import stat
import sys
import time

from .errors import UserInputError

#: temporary files carry this mark (``.<name>.tmp-<random>``); partial writes of a killed
#: process are removed by name (:func:`mmtlalign.engine.checkpoint.remove_partial_writes`)
TMP_MARK = '.tmp-'
#: records are small; a larger file is not one of ours
RECORD_LIMIT = 1 << 20
#: Slurm job ids (``123`` or an array task ``123_4``); anything else could be an option
JOB_ID = re.compile(r'\A\d+(_\d+)?\Z')  # (\Z: '$' would let a final newline through)
#: mmengine's run folders, ``YYYYmmdd_HHMMSS``
RUN_FOLDER = re.compile(r'\A\d{8}_\d{6}\Z')
_NOFOLLOW = getattr(os, 'O_NOFOLLOW', 0)
_DIRECTORY = getattr(os, 'O_DIRECTORY', 0)
_CLOEXEC = getattr(os, 'O_CLOEXEC', 0)


class WorkDirError(UserInputError):
    """A work dir holds something the tools will not use (a symlink, a record that fails its
    schema); the message names the file and what to delete."""


def shown(text, limit=400):
    """Untrusted text for a message: ``repr`` (control characters and newlines escaped), cut
    to ``limit`` characters."""
    text = repr(text)
    return text if len(text) <= limit else text[:limit - 4] + '...' + text[-1]


def _refuse(path, what, fix=None):
    fix = fix or f'delete {shown(path)} (it was not written by these tools) and run again'
    return WorkDirError(f'{shown(path)} {what}; {fix}.')


def _oserror(e, path):
    if e.errno in (errno.ELOOP, errno.ENOTDIR) and osp.islink(path):
        return _refuse(path, 'is a symlink: the tools never write through or read a link in '
                             'a work dir')
    if e.errno == errno.ENOTDIR:
        return _refuse(path, 'is not a folder')
    if e.errno == errno.ENXIO:  # a FIFO or socket opened O_NONBLOCK
        return _refuse(path, 'is not a regular file')
    return None


# --------------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------------
def _parts(path, root):
    rel = osp.relpath(osp.abspath(path), osp.abspath(root))
    if rel == '.':
        return []
    if rel == '..' or rel.startswith('..' + os.sep) or osp.isabs(rel):
        raise ValueError(f'{path!r} is not inside {root!r}')
    return rel.split(os.sep)


def open_folder(path, root=None, create=True, mode=0o777):
    """A file descriptor of the folder ``path`` (the caller closes it).

    ``root`` (default: ``path`` itself) is the folder the user named, opened as given (it may
    well be a link the user made); every component from there to ``path`` is entered with
    ``O_NOFOLLOW``, made first when ``create``: a symlinked folder inside the work dir is a
    :class:`WorkDirError`.
    """
    root = path if root is None else root
    if create:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    where = root
    try:
        for part in _parts(path, root):
            where = osp.join(where, part)
            if create:
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                except FileExistsError:  # there already (or made beside us): entered below
                    pass
            try:
                new = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise (_oserror(e, where) or e) from None
            os.close(fd)
            fd = new
    except BaseException:
        os.close(fd)
        raise
    return fd


def makedirs(path, root=None):
    """Make ``path`` (a folder below ``root``, see :func:`open_folder`); returns ``path``."""
    os.close(open_folder(path, root))
    return path


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _split(path, root):
    folder, name = osp.split(osp.abspath(path))
    if root is None:
        root = folder
    return folder, name, root


def write_bytes(path, data, root=None, mode=0o644, fsync=False, writer=None):
    """Write ``data`` to ``path`` whole: a temporary file created ``O_EXCL`` under a fresh
    name in the same folder, then renamed over ``path`` (a link there is replaced, never
    followed). ``fsync``: flush file and folder to disk first (checkpoints); ``writer(f,
    data)``: what writes the bytes (default ``f.write``)."""
    folder, name, root = _split(path, root)
    dfd = open_folder(folder, root)
    tmp = f'.{name}{TMP_MARK}{secrets.token_hex(6)}'

    def opener(file, flags):
        return os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, mode,
                       dir_fd=dfd)
    try:
        try:
            with open(tmp, 'wb', opener=opener) as f:
                (writer or _write)(f, data)
                if fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
        if fsync:
            try:
                os.fsync(dfd)
            except OSError:
                pass
    finally:
        os.close(dfd)
    return path


def _write(f, data):
    f.write(data)


def write_text(path, text, root=None, **kwargs):
    return write_bytes(path, text.encode('utf-8'), root, **kwargs)


def write_json(path, obj, root=None, **dump_kwargs):
    dump_kwargs.setdefault('indent', 2)
    return write_text(path, json.dumps(obj, **dump_kwargs), root)


def write_figure(fig, path, root=None, dpi=110):
    """A matplotlib figure as a PNG at ``path``, written whole (``fig.savefig(path)`` opens
    the name with plain ``open()``, following a planted link)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format='png')
    return write_bytes(path, buf.getvalue(), root)


def _check_regular(fd, path, writing):
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, 'is not a regular file')
    if writing and st.st_nlink != 1:
        raise _refuse(path, f'has {st.st_nlink} hard links (one may be another user\'s file)')
    return st


def open_regular(path, flags, root=None, mode=0o644):
    """``os.open`` of ``path`` with ``flags | O_NOFOLLOW`` in its folder below ``root``; the
    file must be a regular file, with one link when opened for writing (a second name could be
    another user's file). Folders are made only with ``O_CREAT``. Returns the descriptor."""
    folder, name, root = _split(path, root)
    writing = bool(flags & (os.O_WRONLY | os.O_RDWR))
    dfd = open_folder(folder, root, create=bool(flags & os.O_CREAT))
    try:
        # O_NONBLOCK: a planted FIFO must not block the open; a regular file ignores it
        fd = os.open(name, flags | _NOFOLLOW | _CLOEXEC | os.O_NONBLOCK, mode, dir_fd=dfd)
    except OSError as e:
        raise (_oserror(e, path) or e) from None
    finally:
        os.close(dfd)
    try:
        _check_regular(fd, path, writing)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_append(path, root=None, text=True):
    """A log opened ``O_WRONLY|O_APPEND|O_CREAT|O_NOFOLLOW`` (line-buffered text by default)."""
    fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, root)
    return os.fdopen(fd, 'a', buffering=1) if text else os.fdopen(fd, 'ab')


def create_log(path, root=None):
    """Make sure ``path`` is a regular log file the tools created (for a writer that opens it
    by name later, e.g. Slurm's ``--output``); returns ``path``."""
    os.close(open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, root))
    return path


def open_lock(path):
    """The lock file ``path`` opened ``O_RDWR|O_CREAT|O_NOFOLLOW`` (a descriptor)."""
    return open_regular(path, os.O_RDWR | os.O_CREAT)


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------
def read_bytes(path, root=None, limit=RECORD_LIMIT, own=True):
    """The bytes of ``path`` (``None`` when it does not exist), read ``O_NOFOLLOW``; it must be
    a regular file of at most ``limit`` bytes, owned by this user when ``own``."""
    try:
        fd = open_regular(path, os.O_RDONLY, root)
    except FileNotFoundError:
        return None
    try:
        st = os.fstat(fd)
        if own and hasattr(os, 'geteuid') and st.st_uid != os.geteuid():
            raise _refuse(path, f'belongs to another user (uid {st.st_uid}): the tools only '
                                'read back records they wrote themselves')
        if st.st_size > limit:
            raise _refuse(path, f'is {st.st_size} bytes, more than a record of these tools '
                                f'({limit} at most)')
        with os.fdopen(fd, 'rb') as f:
            fd = None
            return f.read(limit + 1)
    finally:
        if fd is not None:
            os.close(fd)


def read_json(path, schema=None, root=None, what='record', fix=None):
    """A JSON record (``None`` when ``path`` does not exist), checked against ``schema``
    (see :func:`check`); a file that is not one is a :class:`WorkDirError`."""
    data = read_bytes(path, root)
    if data is None:
        return None
    try:
        obj = json.loads(data.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        raise _refuse(path, f'is not a {what} of these tools (not valid JSON)', fix) from None
    if schema is not None:
        problem = check(obj, schema)
        if problem:
            raise _refuse(path, f'is not a {what} of these tools ({problem})', fix)
    return obj


_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f]')


def tail(path, n=15, root=None, chunk=1 << 16):
    """The last ``n`` lines of the log ``path`` ('' when missing), read ``O_NOFOLLOW``, with
    control characters (terminal escapes, carriage returns) taken out."""
    try:
        fd = open_regular(path, os.O_RDONLY, root)
    except FileNotFoundError:
        return ''
    with os.fdopen(fd, 'rb') as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(max(0, size - chunk))
        text = f.read(chunk).decode('utf-8', 'replace')
    lines = _CONTROL.sub('', text).splitlines(keepends=True)
    return ''.join(lines[-n:])


def sha256(path, root=None):
    """SHA-256 (hex) of the regular file ``path``, read ``O_NOFOLLOW``."""
    fd = open_regular(path, os.O_RDONLY, root)
    h = hashlib.sha256()
    with os.fdopen(fd, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            h.update(block)
    return h.hexdigest()


def file_inside(path, root):
    """Whether ``path`` is a single-line absolute path of a regular file below ``root`` with
    no link on the way (what a record may name)."""
    if not isinstance(path, str) or not path or any(c in path for c in '\r\n\0'):
        return False
    if not osp.isabs(path) or osp.normpath(path) != path:
        return False
    root = osp.abspath(root)
    if osp.commonpath([root, path]) != root or path == root:
        return False
    try:
        os.close(open_regular(path, os.O_RDONLY, root))
    except (OSError, WorkDirError, ValueError):
        return False
    return True


def read_last_checkpoint(work_dir, root=None):
    """The checkpoint named by ``<work_dir>/last_checkpoint`` (``None`` when there is none).

    The file must be one line naming a regular file inside the work dir (or, with ``root``,
    below ``root``), reached without a link; anything else is a :class:`WorkDirError`.
    """
    path = osp.join(work_dir, 'last_checkpoint')
    data = read_bytes(path, limit=4096)
    if data is None:
        return None
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError:
        text = None
    ckpt = text.strip() if text is not None else None
    inside = osp.abspath(root or work_dir)
    if ckpt is not None and not osp.isabs(ckpt):
        ckpt = osp.join(osp.abspath(work_dir), ckpt)
    if ckpt is None or text.rstrip('\n').count('\n') or not file_inside(ckpt, inside):
        raise _refuse(path, f'does not name one checkpoint file inside {shown(inside)} '
                            f'(it holds {shown((text or data.decode("latin-1"))[:200])})',
                      'delete it (then --resume finds no checkpoint, or pass --resume '
                      'PATH/TO/CKPT.pth)')
    return ckpt


# --------------------------------------------------------------------------------------------
# schemas: {key: predicate}; a key ending in '?' may be missing
# --------------------------------------------------------------------------------------------
def check(obj, schema, where=''):
    """The first problem of ``obj`` against ``schema`` (a predicate, or a dict of key ->
    schema whose keys ending in ``?`` are optional), or ``None``."""
    if isinstance(schema, dict):
        if not isinstance(obj, dict):
            return f'{where or "the record"} is not an object'
        for key, sub in schema.items():
            name, optional = key.rstrip('?'), key.endswith('?')
            here = f'{where}.{name}' if where else name
            if name not in obj:
                if optional:
                    continue
                return f'{here} is missing'
            problem = check(obj[name], sub, here)
            if problem:
                return problem
        return None
    if not schema(obj):
        return f'{where} = {shown(obj, 60)} is not allowed'
    return None


def is_str(x):
    return isinstance(x, str) and len(x) < 4096


def is_line(x):
    return is_str(x) and not any(c in x for c in '\r\n\0')


def is_job_id(x):
    return isinstance(x, str) and bool(JOB_ID.match(x))


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)


def is_sha256(x):
    return isinstance(x, str) and bool(re.fullmatch(r'[0-9a-f]{64}', x))


def one_of(*values):
    return lambda x: isinstance(x, str) and x in values


def optional(pred):
    return lambda x: x is None or pred(x)


def list_of(pred, most=10000):
    return lambda x: isinstance(x, list) and len(x) <= most and all(pred(v) for v in x)


def dict_of(pred, most=10000):
    return lambda x: (isinstance(x, dict) and len(x) <= most and
                      all(is_line(k) and pred(v) for k, v in x.items()))


def is_dict(x):
    return isinstance(x, dict)


# --------------------------------------------------------------------------------------------
# what is there before a run starts
# --------------------------------------------------------------------------------------------
def check_before_run(work_dir):
    """Refuse (one line) a symlink where mmengine's Runner will write: the work dir's top
    level (config dump ``<config>.py``, checkpoints, ``last_checkpoint``, run folders) and the
    run folders ``YYYYmmdd_HHMMSS/`` with their ``vis_data/``. mmengine opens those names
    with plain ``open()``; our own writes go through this module."""
    if not osp.isdir(work_dir):
        return
    todo = [(work_dir, 0)]
    while todo:
        folder, depth = todo.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                raise _refuse(entry.path, 'is a symlink in a work dir, where the training '
                                          'run writes (mmengine would write through it)')
            if not entry.is_dir(follow_symlinks=False):
                continue
            if (depth == 0 and RUN_FOLDER.match(entry.name)) or \
                    (depth == 1 and entry.name == 'vis_data'):
                todo.append((entry.path, depth + 1))


def shared_access_note(work_dir):
    """A one-line warning when other users can write ``work_dir`` (group or other write bit
    and no sticky bit of ours), else ``None``."""
    try:
        st = os.stat(work_dir)
    except OSError:
        return None
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    sticky_ours = st.st_mode & stat.S_ISVTX and st.st_uid == getattr(os, 'geteuid', int)()
    if not writable or sticky_ours:
        return None
    who = 'everyone' if st.st_mode & stat.S_IWOTH else 'its group'
    return (f'work dir {shown(work_dir)} is writable by {who} (mode {stat.S_IMODE(st.st_mode):o}): '
            'the tools will not follow a symlink there, will only read back records that you '
            'own and that pass their checks, and count a cell as finished only when its '
            'checkpoint matches the SHA-256 in its marker; they cannot stop another user from '
            'deleting or replacing your files there -- use a folder only you can write '
            '(chmod g-w,o-w) or one with the sticky bit (chmod +t).')


# --------------------------------------------------------------------------------------------
# the Slurm job script's own writes (python -c, without importing torch; see benchmark/slurm)
# --------------------------------------------------------------------------------------------
def main(argv):
    """``job-record PATH JOB_ID RC``: write a Slurm job's end record;
    ``last-checkpoint WORK_DIR``: print the checked checkpoint path (exit 1 with the error)."""
    try:
        if argv[0] == 'job-record':
            path, job, rc = argv[1:4]
            write_json(path, dict(job_id=job, rc=int(rc),
                                  ended=time.strftime('%Y-%m-%d %H:%M:%S')), indent=None)
        elif argv[0] == 'last-checkpoint':
            ckpt = read_last_checkpoint(argv[1])
            if ckpt is None:
                sys.exit(f'error: {shown(argv[1])} holds no last_checkpoint')
            print(ckpt)
        else:
            sys.exit(f'error: unknown command {shown(argv[0])}')
    except (UserInputError, OSError, ValueError) as e:
        sys.exit(f'error: {e}')
