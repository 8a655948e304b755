"""Training options that ``tools/train.py`` maps onto the config (kept here, the tool stays thin).

* ``compile`` (``--cfg-options compile=True`` or a dict of ``torch.compile`` arguments): build
  :class:`~mmtlalign.engine.compile.CompileRunner`, which compiles the model's compute and keeps
  the optimizer step eager (mmengine's own compile path fails in the optimizer step).
* ``--tensorboard``: add mmengine's ``TensorboardVisBackend`` beside the configured backends.
* always: :class:`~mmtlalign.engine.resume_check.ResumeCheckHook`, so that ``--resume`` takes
  only counters from the file (``resume_schedule=config`` / ``=checkpoint`` accept the config's
  / the file's differing hyper-parameters).
"""
from .compile import use_compile_runner
from .resume_check import add_resume_check
from .tensorboard import add_tensorboard


def apply(cfg, tensorboard=False):
    """Apply the options to ``cfg`` in place; raises ``UserInputError`` for a bad value."""
    use_compile_runner(cfg)
    add_resume_check(cfg)
    if tensorboard:
        add_tensorboard(cfg)
    return cfg
