"""Checkpoints that a killed process cannot leave half-written.

mmengine writes checkpoints and ``last_checkpoint`` in place, and with ``max_keep_ckpts`` deletes
the oldest checkpoint *before* writing the new one: a process killed while saving (pre-emption,
out-of-memory kill, a full disk) can leave a truncated ``iter_N.pth``, or a ``last_checkpoint``
that names a checkpoint already deleted, and ``--resume`` then fails.

Here every file is written to a temporary file in the same folder, flushed to disk and renamed
over the final name (``os.replace`` is atomic on POSIX file systems): the final name only ever
holds a complete file. ``last_checkpoint`` is updated the same way, only after the checkpoint is
complete, and outdated checkpoints are deleted only after that. Leftover temporary files of a
killed save are removed when the next run starts. The temporary files are created ``O_EXCL``
under fresh random names (:mod:`mmtlalign.workdir`): a symlink planted in a shared work dir under
a checkpoint's name is replaced, never written through.
"""
import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from .. import workdir
from ..workdir import TMP_MARK
from .resume import ExactResumeHook


def atomic_write(filepath, data):
    """Write ``data`` (bytes or str) to ``filepath`` through a temporary file (created
    ``O_EXCL`` under a fresh name, never through a planted link), fsync and a rename
    (:func:`mmtlalign.workdir.write_bytes`)."""
    workdir.write_bytes(str(filepath),
                        data.encode('utf-8') if isinstance(data, str) else data,
                        fsync=True, writer=lambda f, d: AtomicLocalBackend._write(f, d))


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, with ``put``/``put_text`` made atomic (temporary file,
    fsync, rename). Select it with ``backend_args=dict(backend='atomic_local')``."""

    @staticmethod
    def _write(f, data):
        # one place to write the bytes; tests replace it to simulate a kill mid-write
        f.write(data)

    def put(self, obj, filepath):
        atomic_write(filepath, obj)

    def put_text(self, obj, filepath, encoding='utf-8'):
        atomic_write(filepath, obj.encode(encoding))


register_backend('atomic_local', AtomicLocalBackend, force=True)


def remove_partial_writes(folder):
    """Delete temporary files left by saves that were killed; returns their paths."""
    removed = []
    for path in glob.glob(osp.join(glob.escape(folder), f'.*{TMP_MARK}*')):
        if osp.isfile(path):
            os.remove(path)
            removed.append(path)
    return removed


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` whose saves cannot leave a broken checkpoint.

    Same arguments and behaviour as the parent, plus: checkpoints (including ``best_*``) are
    written to a temporary file and renamed; ``last_checkpoint`` is rewritten atomically after
    the checkpoint is complete; ``max_keep_ckpts`` deletes old checkpoints after the new one is
    complete; partial writes of a killed run are removed at start; and, with
    :class:`~mmtlalign.engine.resume.ExactResumeHook`, every rank's random state is gathered
    into the checkpoint. For a non-local ``out_dir`` (``s3://``, ...) the object stores' own
    (atomic) uploads are used.
    """

    def __init__(self, *args, backend_args=None, file_client_args=None, **kwargs):
        out_dir = kwargs.get('out_dir')
        local = out_dir is None or '://' not in str(out_dir)
        if backend_args is None and file_client_args is None and local:
            backend_args = dict(backend='atomic_local')
        self.atomic = local and (backend_args or {}).get('backend') == 'atomic_local'
        super().__init__(*args, backend_args=backend_args, file_client_args=file_client_args,
                         **kwargs)

    def before_train(self, runner):
        super().before_train(runner)
        if self.atomic and is_main_process() and osp.isdir(self.out_dir):
            for path in remove_partial_writes(self.out_dir):
                runner.logger.warning(f'Removed {path}: a checkpoint whose writing was '
                                      'interrupted (the previous run was killed while saving).')

    @staticmethod
    def _collect_resume_states(runner):
        for hook in runner.hooks:  # every rank, before only rank 0 enters save_checkpoint
            if isinstance(hook, ExactResumeHook):
                hook.collect(runner)

    def _save_best_checkpoint(self, runner, metrics):
        if self.save_best:
            self._collect_resume_states(runner)
        super()._save_best_checkpoint(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta):
        self._collect_resume_states(runner)

        outdated = None
        if self.max_keep_ckpts > 0:
            if not (len(self.keep_ckpt_ids) > 0 and self.keep_ckpt_ids[-1] == step):
                if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                    outdated = self.keep_ckpt_ids.popleft()
                self.keep_ckpt_ids.append(step)
                runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)

        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)

        if not is_main_process():
            return
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if outdated is not None and outdated != step:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(outdated))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
