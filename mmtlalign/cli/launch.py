"""What ``tools/train.py`` and ``tools/test.py`` share: config checks and launcher set-up.

Every check raises :class:`UserInputError` with a message that names the problem and the fix;
the tools print it without a traceback.
"""
import difflib
import errno
import importlib
import os
import os.path as osp
import subprocess

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction
from mmengine.registry import OPTIMIZERS, RUNNERS
from mmengine.runner import Runner

from .. import workdir
from ..config_scope import PREFIX, resolve
from ..errors import UserInputError  # noqa: F401  (re-exported for the tools)
from .coco_check import check_coco_classes  # noqa: F401  (the tools call it from here)
from .dataset_configs import annotation_path, dataset_configs
from .schedule import check_schedule  # noqa: F401  (the tools call it from here)


def add_common_args(parser):
    """--cfg-options and launcher arguments shared by tools/train.py and tools/test.py."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config keys, e.g. train_dataloader.batch_size=32 '
        'model.head.num_classes=10 test_dataloader.dataset.data_root=data/imagenet')
    parser.add_argument(
        '--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
        help='job launcher (tools/dist_*.sh and tools/slurm_*.sh set it)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_args(parser, argv=None):
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_config(path, cfg_options=None):
    """Read a config file, with a clear error if it does not exist or does not parse.

    ``path`` may also name one of our configs by scope, ``mmtlalign::tlalign/deit-s_8xb128.py``
    (or ``mmtlalign::deit-s_8xb128.py``), as ``_base_`` can (:mod:`mmtlalign.config_scope`).
    """
    if path.startswith(PREFIX):
        try:
            path = resolve(path[len(PREFIX):])
        except FileNotFoundError as e:
            raise UserInputError(f'config {e}') from None
    if not osp.isfile(path):
        hint = ''
        if not path.endswith('.py'):
            hint = ' (config files end in .py)'
        raise UserInputError(f'config file {path!r} does not exist{hint}; see configs/ for the '
                             'available ones.')
    try:
        cfg = Config.fromfile(path)
    except (SyntaxError, ImportError, OSError, KeyError, TypeError, ValueError) as e:
        raise UserInputError(f'cannot load config {path!r}: {type(e).__name__}: {e}') from e
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def default_work_dir(cfg, config_path, work_dir=None):
    """--work-dir, else the config's work_dir, else ./work_dirs/<config name>."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    name = config_path.split('::')[-1]  # mmtlalign::tlalign/x.py -> x
    return osp.join('./work_dirs', osp.splitext(osp.basename(name))[0])


def resolve_resume(cfg, resume):
    """Apply ``--resume``: ``'auto'`` resumes from the latest checkpoint of the work dir."""
    if resume is None:
        return
    if resume == 'auto':
        # last_checkpoint read and checked here (one line naming a checkpoint inside the work
        # dir), not by mmengine's find_latest_checkpoint, which returns whatever text it holds
        ckpt = workdir.read_last_checkpoint(cfg.work_dir)
        if ckpt is None:
            raise UserInputError(
                f'--resume was given but {cfg.work_dir!r} holds no checkpoint to resume from '
                '(no last_checkpoint file). Train without --resume first, pass '
                '--resume PATH/TO/CKPT.pth, or point --work-dir at the run to continue.')
        cfg.resume, cfg.load_from = True, ckpt
        return
    if not osp.isfile(resume):
        raise UserInputError(f'--resume checkpoint {resume!r} does not exist.')
    cfg.resume, cfg.load_from = True, resume


def enable_amp(cfg):
    """Apply ``--amp`` (mixed precision needs a CUDA GPU)."""
    if not torch.cuda.is_available():
        raise UserInputError('--amp needs a CUDA GPU and none is available here; drop --amp to '
                             'train in float32 on the CPU.')
    optim_wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_wrapper not in ('OptimWrapper', 'AmpOptimWrapper'):
        raise UserInputError(
            f'--amp only works with OptimWrapper, the config uses {optim_wrapper}.')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def check_data_roots(cfg, loaders):
    """Fail early, naming the config key, when a dataset folder or annotation file is missing."""
    for loader in loaders:
        if cfg.get(loader) is None:
            continue
        for ds in dataset_configs(cfg[loader].get('dataset')):
            if ds.get('download'):  # the dataset class fetches its own files
                continue
            root = ds.get('data_root')
            if root and not osp.isdir(root):
                raise UserInputError(
                    f'dataset folder {root!r} ({loader}.dataset.data_root) does not exist. '
                    'Put the data there (see README "Datasets") or override it, e.g. '
                    f'--cfg-options {loader}.dataset.data_root=/path/to/data')
            path = annotation_path(ds)
            if path:
                if not osp.isfile(path):
                    raise UserInputError(
                        f'annotation file {path!r} ({loader}.dataset.ann_file) does not exist; '
                        f'override it with --cfg-options {loader}.dataset.ann_file=...')


def setup_cpu_distributed(cfg, launcher):
    """Distributed runs on CPU-only machines: gloo, and DDP without device ids.

    mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and its DDP wrapper passes
    ``device_ids``; without a GPU we initialise the process group ourselves (the Runner then
    skips its own initialisation) and build the wrapper with ``device_ids=None``.
    """
    check_launcher_env(launcher)
    if launcher == 'slurm':
        slurm_master_port()
    if launcher == 'none' or torch.cuda.is_available() or dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env()
    elif launcher != 'pytorch':
        raise UserInputError(f'launcher {launcher!r} needs GPUs; on CPU use --launcher pytorch '
                             '(tools/dist_train.sh) or slurm.')
    dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']))
    cfg.env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.update(device_ids=None)
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper


_LAUNCHER_ENV = {
    'pytorch': (('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'start it with tools/dist_train.sh CONFIG NUM_PROCS (or torchrun '
                '--nproc_per_node NUM_PROCS tools/train.py CONFIG --launcher pytorch)'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
              'start it inside a slurm job step: tools/slurm_train.sh PARTITION JOB CONFIG '
              'WORK_DIR (srun)'),
}


def check_launcher_env(launcher):
    """``--launcher pytorch|slurm`` needs the environment torchrun / srun set."""
    if launcher not in _LAUNCHER_ENV:
        return
    names, how = _LAUNCHER_ENV[launcher]
    missing = [n for n in names if n not in os.environ]
    if missing:
        raise UserInputError(f'--launcher {launcher} needs the environment its launcher sets '
                             f'({", ".join(missing)} missing): {how}; or drop --launcher for '
                             'one process.')


def finish_distributed():
    """Tear the process group down once a run has finished, on every process.

    Without it a gloo process can die at interpreter exit (``terminate called without an
    active exception``) while another still tears down, and torchrun fails a finished job.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


#: MASTER_PORTs of Slurm job steps: below Linux's ephemeral range (32768-60999), where an
#: outgoing connection could already hold the port
PORT_BASE, PORT_SPAN = 20000, 12000
#: prime to PORT_SPAN: jobs with nearby ids (those that share a node) get ports far apart
PORT_STRIDE = 101


def slurm_master_port():
    """A ``MASTER_PORT`` of this Slurm job step, unless one is set: two jobs (or two steps of
    one job) on the same node then do not both listen on mmengine's default 29500. Every task
    of a step computes the same port from the job and step ids: jobs whose ids differ by less
    than 118 never share one (nor do the first 101 steps of a job), and the first steps of two
    jobs only when their ids differ by a multiple of 12000."""
    if 'MASTER_PORT' in os.environ or 'SLURM_JOB_ID' not in os.environ:
        return
    job = int(os.environ['SLURM_JOB_ID'])
    step = os.environ.get('SLURM_STEP_ID', '0')
    step = int(step) % PORT_STRIDE if step.isdigit() else 0  # 'batch' in the batch script
    os.environ['MASTER_PORT'] = str(PORT_BASE + (job * PORT_STRIDE + step) % PORT_SPAN)


def _slurm_env_to_torch_env():
    nodes = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def build_runner(cfg):
    """Build the Runner (or the config's ``runner_type``)."""
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def checkpoint_to_load(cfg):
    """(path, how the user gave it) of the checkpoint the Runner will load, or None."""
    if cfg.get('resume') and not cfg.get('load_from'):
        path = workdir.read_last_checkpoint(cfg.work_dir)
        return (path, '--resume') if path else None
    if cfg.get('load_from'):
        return cfg.load_from, '--resume' if cfg.get('resume') else 'load_from'
    return None


def check_optimizer(cfg):
    """The optimizer type must be registered (mmengine otherwise fails mid-build with
    ``TypeError: None is not a callable object``)."""
    wrapper = cfg.get('optim_wrapper') or {}
    optimizer = wrapper.get('optimizer') if isinstance(wrapper, dict) else None
    name = optimizer.get('type') if isinstance(optimizer, dict) else None
    if not isinstance(name, str):
        return
    try:  # the scope's own registry: its optimizers, then mmengine's (torch.optim)
        registry = importlib.import_module(f'{cfg.get("default_scope")}.registry').OPTIMIZERS
    except (ImportError, AttributeError):
        registry = OPTIMIZERS
    if registry.get(name) is not None:
        return
    known = sorted(set(registry.module_dict) | set(OPTIMIZERS.module_dict))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f' Did you mean {" or ".join(close)}?' if close else ''
    raise UserInputError(
        f'optim_wrapper.optimizer.type={name!r} is not a registered optimizer.{hint} Known: '
        f'{", ".join(known[:12])}{", ..." if len(known) > 12 else ""} (torch.optim names).')


_STORAGE_ERRNOS = {
    errno.EROFS: 'the file system is read-only',
    errno.EACCES: 'permission denied',
    errno.EPERM: 'permission denied',
    errno.ENOSPC: 'no space left on the device',
    errno.EDQUOT: 'the disk quota is exceeded',
}


def storage_error(error, work_dir=None):
    """A one-line message for a write that failed because of the disk, or None for any other
    :class:`OSError` (which the tools re-raise)."""
    why = _STORAGE_ERRNOS.get(getattr(error, 'errno', None))
    if why is None:
        return None
    where = error.filename or work_dir or '?'
    fix = ('free some space (older checkpoints: default_hooks.checkpoint.max_keep_ckpts) and '
           'resume with --resume: the last complete checkpoint is intact'
           if error.errno in (errno.ENOSPC, errno.EDQUOT) else
           'pass a writable --work-dir (or fix the permissions)')
    return f'cannot write {where!r}: {why}. {fix}.'
