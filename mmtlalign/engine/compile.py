"""``compile=True`` for mmtlalign training: compile the model's tensor compute, keep the
optimizer step and the Python bookkeeping eager.

Why not mmengine's own path. mmengine 0.10.7's ``Runner`` (``cfg.compile``) wraps
``model.train_step`` in ``torch.compile``. ``train_step`` is data preprocessing, the loss *and*
``optim_wrapper.update_params``, so dynamo traces through mmengine's ``OptimWrapper`` into
``AdamW.step``. With torch 2.14 that stops at the first iteration, for every mmpretrain recipe,
with ``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute 'items'``:
mmengine's ``DefaultOptimWrapperConstructor`` (``paramwise_cfg``) builds the optimizer's
param groups as ``ConfigDict`` objects, while dynamo's optimizer support
(``torch/_dynamo/variables/optimizer.py``, ``_set_capturable``) writes into every param group
as if it were a plain ``dict``. Even where that traced, a TL-Align step is mostly Python that
should not be compiled: the mixer draws the box and lambda from numpy every step (dynamo would
specialise on each new value and recompile), and targets are set on ``DataSample`` objects.

What we do instead. :func:`compile_model` compiles, in place, the modules that do the
arithmetic -- ``backbone``, ``neck``, ``head`` and, on a ViT, the label rule's forward pass
(TL-Align or TransMix: the backbone's forward with the token shares riding along, one graph) --
with the
config's ``compile`` options; mixing, targets, loss bookkeeping, backward and the optimizer
step run eagerly around them. ``state_dict`` keys do not change (``nn.Module.compile`` keeps the
module, unlike ``torch.compile(module)``, which would prefix every key with ``_orig_mod.``), so
checkpoints move freely between compiled and eager runs.

:class:`CompileRunner` is mmengine's ``Runner`` with that as its compile step. ``tools/train.py``
uses it whenever the config sets ``compile`` (:func:`use_compile_runner`); with another training
script set ``runner_type = 'CompileRunner'`` in the config.
"""
import torch
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner
from mmpretrain.models import VisionTransformer

from ..errors import UserInputError
from ..models.dynamo import python_drop_probs

#: The classifier parts that are compiled, when present.
COMPILED_PARTS = ('backbone', 'neck', 'head')


def compile_options(compile_cfg):
    """Normalise the config's ``compile`` value as mmengine does.

    Args:
        compile_cfg (bool | dict | None): ``True`` (torch's defaults), ``False``/``None`` (off)
            or keyword arguments of :func:`torch.compile` (``backend``, ``mode``, ``dynamic``,
            ``fullgraph``, ``options``).

    Returns:
        dict | None: keyword arguments for :func:`torch.compile`, or None when off.
    """
    if compile_cfg is None or compile_cfg is False:
        return None
    if compile_cfg is True:
        return {}
    if isinstance(compile_cfg, dict):
        return dict(compile_cfg)
    raise UserInputError(f'compile must be True, False or a dict of torch.compile arguments '
                         f'(e.g. compile=dict(backend="inductor")), got {compile_cfg!r}.')


def compile_model(model, **options):
    """Compile the compute of a classifier in place; everything else stays eager.

    Compiled: ``backbone``, ``neck`` and ``head`` (their ``__call__``, through
    ``nn.Module.compile``) and, on a ViT, the label rule's ``mixed_share`` (TL-Align, TransMix:
    the backbone's forward with the token shares riding along, one graph for all blocks), or,
    for a classifier without label rules, the backbone's ``forward_aligned``. Swin's aligned
    forward stays eager (its tracing hooks are registered per call).

    Args:
        model (nn.Module): an mmpretrain-style classifier (``backbone``, optional ``neck`` and
            ``head``), unwrapped.
        **options: keyword arguments of :func:`torch.compile`.

    Returns:
        list[str]: what was compiled, e.g. ``['backbone', 'head', 'label_rule.mixed_share']``.
    """
    python_drop_probs(model)  # else the graph breaks twice per block (models/dynamo.py)
    compiled = []
    for name in COMPILED_PARTS:
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            module.compile(**options)  # __call__ runs the compiled forward; parameters stay put
            compiled.append(name)
    # The share-carrying forward is called directly, not through the backbone's __call__.
    # Only the ViT's tracing runs inside one graph (it swaps the blocks' attention call); Swin's
    # observes the attention with forward hooks registered per call, which dynamo does not
    # follow, so its aligned forward stays eager.
    backbone = getattr(model, 'backbone', None)
    rule = getattr(model, 'label_rule', None)
    if isinstance(backbone, VisionTransformer):
        if callable(getattr(rule, 'mixed_share', None)):
            rule.mixed_share = torch.compile(rule.mixed_share, **options)
            compiled.append('label_rule.mixed_share')
        elif callable(getattr(backbone, 'forward_aligned', None)):
            backbone.forward_aligned = torch.compile(backbone.forward_aligned, **options)
            compiled.append('backbone.forward_aligned')
    if not compiled:
        raise UserInputError(f'compile=True: {type(model).__name__} has none of '
                             f'{COMPILED_PARTS} to compile; set compile=False.')
    return compiled


@RUNNERS.register_module()
class CompileRunner(Runner):
    """mmengine's :class:`~mmengine.runner.Runner` whose ``compile`` option compiles the model's
    backbone, neck and head (:func:`compile_model`) instead of the whole ``train_step``, so
    the optimizer step and the mixing stay eager. Select it with
    ``runner_type = 'CompileRunner'`` (``tools/train.py`` does when ``compile`` is set)."""

    def _maybe_compile(self, target):
        options = compile_options(self.cfg.get('compile'))
        if options is None:
            return
        model = self.model.module if is_model_wrapper(self.model) else self.model
        compiled = compile_model(model, **options)
        self.logger.info(f'torch.compile({options}) applied to {", ".join(compiled)} (the '
                         'optimizer step and mixing stay eager); the first iterations will be '
                         'slow.')


def use_compile_runner(cfg):
    """Have the config build :class:`CompileRunner` when it sets ``compile``.

    A config with its own ``runner_type`` keeps it. Raises :class:`UserInputError` for a
    ``compile`` value that is neither a bool nor a dict.
    """
    if compile_options(cfg.get('compile')) is None or 'runner_type' in cfg:
        return cfg
    cfg.runner_type = 'CompileRunner'
    return cfg
