"""Checkpoint conversion for downstream use (the logic behind ``tools/model_converters/``).

* :func:`classifier_to_backbone`: an mmpretrain/mmtlalign classifier checkpoint -> the
  backbone's own ``state_dict`` (keys without ``backbone.``), for
  ``init_cfg=dict(type='Pretrained', checkpoint=...)`` without a prefix.
* :func:`timm_to_mmpretrain`: timm-format weights (the official TL-Align / DeiT release, the
  official Swin release, or any timm ``VisionTransformer`` / ``SwinTransformer`` state dict,
  timm 0.3 to 1.0) -> mmpretrain keys, as a classifier checkpoint (``backbone.*`` and
  ``head.*``) or backbone only.

Every source key must be used (or be a buffer that mmpretrain rebuilds); anything left over is
an error that names it, so a silently half-converted checkpoint cannot happen.
"""
import re
from collections import OrderedDict

import torch

from .state_dict import CONVERTER_CLS, CONVERTER_TIMM, ConversionError, unwrap_state_dict  # noqa: F401


# ----------------------------------------------------------------------------- loading
def load_checkpoint_file(path, trust=False):
    """Load a checkpoint on the CPU.

    Weights only by default (:func:`mmtlalign.checkpoint.loader.load_checkpoint_file`): tensors,
    mmengine's message hub types, and, for the official DeiT / TL-Align training checkpoints,
    their stored command line (an ``argparse.Namespace`` of plain values). ``trust=True``
    unpickles fully -- which runs whatever code the file carries -- for files from a source
    you trust whose extra objects the safe loader refuses.
    """
    from .loader import NAMESPACE_GLOBALS, CheckpointLoadError
    from .loader import load_checkpoint_file as safe_load
    if trust:
        return torch.load(path, map_location='cpu', weights_only=False)
    try:
        return safe_load(path, map_location='cpu', extra_globals=NAMESPACE_GLOBALS)
    except CheckpointLoadError as e:
        hint = ''
        if 'refuses' in str(e):
            hint = (' If you made the file yourself with other code and trust it, '
                    '--trust-checkpoint unpickles it fully (this runs any code it carries).')
        raise ConversionError(f'{e}{hint}') from None


# ----------------------------------------------------------------------------- classifier
#: ``meta`` fields a converted checkpoint keeps: short plain values that say where it came from
_META_KEEP = ('epoch', 'iter', 'seed', 'experiment_name', 'time', 'mmengine_version',
              'mmtlalign_converted')


def plain_meta(meta):
    """The fields of ``meta`` we understand, as short plain values; everything else (config
    text, dataset meta, anything a crafted file put there) is left out."""
    if not isinstance(meta, dict):
        return {}
    kept = {}
    for key in _META_KEEP:
        value = meta.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int) or (isinstance(value, str) and len(value) <= 200):
            kept[key] = value
    return kept


def classifier_to_backbone(checkpoint, prefix='backbone.'):
    """A classifier checkpoint -> ``{'meta': ..., 'state_dict': backbone keys}``.

    Optimizer state and the message hub are dropped; of ``meta`` only the plain fields we
    understand are kept (:func:`plain_meta`), with a note of the conversion. The ``_metadata``
    (module versions) is kept too, with the prefix removed.
    """
    sd = unwrap_state_dict(checkpoint)
    backbone = OrderedDict((k[len(prefix):], v) for k, v in sd.items() if k.startswith(prefix))
    if not backbone:
        looks_timm = detect_timm_arch(sd) is not None
        hint = (f' It looks like timm-format weights: convert them with {CONVERTER_TIMM}.'
                if looks_timm else
                ' It may already be a backbone-only checkpoint: use it as it is, with '
                "init_cfg=dict(type='Pretrained', checkpoint=...) and no prefix.")
        raise ConversionError(f'the checkpoint has no {prefix!r} keys (first keys: '
                              f'{_first(sd)}).{hint}')
    metadata = getattr(sd, '_metadata', None)
    if metadata is not None:
        root = prefix[:-1]  # 'backbone'
        backbone._metadata = OrderedDict()
        for k, v in metadata.items():
            if k == root:
                backbone._metadata[''] = v
            elif k.startswith(prefix):
                backbone._metadata[k[len(prefix):]] = v
    meta = plain_meta(checkpoint.get('meta') if isinstance(checkpoint, dict) else None)
    meta['mmtlalign_converted'] = f'backbone only ({prefix!r} stripped) by {CONVERTER_CLS}'
    return {'meta': meta, 'state_dict': backbone}


# ----------------------------------------------------------------------------- timm
def detect_timm_arch(sd):
    """``'vit'``, ``'swin'`` or None for a timm-format state dict."""
    keys = list(sd)
    if any(re.match(r'layers\.\d+\.blocks\.\d+\.attn\.qkv\.', k) for k in keys):
        return 'swin'
    if any(re.match(r'blocks\.\d+\.attn\.qkv\.', k) for k in keys) and 'pos_embed' in sd:
        return 'vit'
    return None


_VIT_BLOCK = [
    ('norm1.', 'ln1.'),
    ('attn.qkv.', 'attn.qkv.'),
    ('attn.proj.', 'attn.proj.'),
    ('norm2.', 'ln2.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
]
_SWIN_BLOCK = [
    ('norm1.', 'norm1.'),
    ('attn.qkv.', 'attn.w_msa.qkv.'),
    ('attn.proj.', 'attn.w_msa.proj.'),
    ('attn.relative_position_bias_table', 'attn.w_msa.relative_position_bias_table'),
    ('norm2.', 'norm2.'),
    ('mlp.fc1.', 'ffn.layers.0.0.'),
    ('mlp.fc2.', 'ffn.layers.1.'),
]


def _first(sd, n=5):
    return ', '.join(list(sd)[:n])


def _map_block(rest, table):
    for src, dst in table:
        if rest.startswith(src):
            return dst + rest[len(src):]
    return None


def timm_vit_to_mmpretrain(sd):
    """timm ``VisionTransformer`` (DeiT, TL-Align DeiT) -> (backbone, head, notes).

    Class-token models map the final ``norm`` to mmpretrain's ``ln1`` (``final_norm=True``,
    ``out_type='cls_token'``); global-pool models with ``fc_norm`` map it to ``ln2``
    (``out_type='avg_featmap'``, ``final_norm=False``). The head goes to
    ``VisionTransformerClsHead``'s ``layers.head``.
    """
    if 'dist_token' in sd or any(k.startswith('head_dist.') for k in sd):
        raise ConversionError('this is a distilled DeiT (dist_token / head_dist); convert it with '
                              "mmpretrain's DistilledVisionTransformer tools, it is not a plain "
                              'ViT/TL-Align checkpoint.')
    backbone, head, left = OrderedDict(), OrderedDict(), []
    notes = []
    for k, v in sd.items():
        m = re.match(r'blocks\.(\d+)\.(.*)', k)
        if m:
            new = _map_block(m.group(2), _VIT_BLOCK)
            if new is None:
                left.append(k)
            else:
                backbone[f'layers.{m.group(1)}.{new}'] = v
        elif k in ('cls_token', 'pos_embed'):
            backbone[k] = v
        elif k.startswith('patch_embed.proj.'):
            backbone['patch_embed.projection.' + k[len('patch_embed.proj.'):]] = v
        elif k.startswith('norm.'):
            backbone['ln1.' + k[len('norm.'):]] = v
        elif k.startswith('fc_norm.'):
            backbone['ln2.' + k[len('fc_norm.'):]] = v
            notes.append("fc_norm -> ln2: build the backbone with out_type='avg_featmap'.")
        elif k.startswith('head.'):
            head['layers.head.' + k[len('head.'):]] = v
        else:
            left.append(k)
    if 'norm.weight' in sd and 'fc_norm.weight' in sd:
        notes.append("both norm and fc_norm: use final_norm=True and out_type='avg_featmap'.")
    if left:
        raise ConversionError(f'timm ViT keys with no mmpretrain counterpart: {left[:10]}'
                              + (f' (+{len(left) - 10} more)' if len(left) > 10 else '')
                              + '. Only plain ViT/DeiT (class token, no register tokens, '
                              'no layer scale) is supported.')
    return backbone, head, notes


def swin_relative_position_index(window_size):
    """The (ws*ws, ws*ws) relative position index of a square Swin window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel = rel + (window_size - 1)
    return rel[:, :, 0] * (2 * window_size - 1) + rel[:, :, 1]


def _merge_reduction_order(w):
    """Patch merging: official/timm concatenate the 2x2 neighbours as (x00, x10, x01, x11) then
    channels; mmpretrain unfolds channels first, then (x00, x01, x10, x11)."""
    out_ch, in_ch = w.shape
    w = w.reshape(out_ch, 4, in_ch // 4)[:, [0, 2, 1, 3], :]
    return w.transpose(1, 2).reshape(out_ch, in_ch)


def _merge_norm_order(w):
    in_ch = w.shape[0]
    w = w.reshape(4, in_ch // 4)[[0, 2, 1, 3], :]
    return w.transpose(0, 1).reshape(in_ch)


def timm_swin_to_mmpretrain(sd):
    """Official Swin / timm ``SwinTransformer`` -> (backbone, head, notes).

    Handles both layouts of the patch merging: at the end of stage i (official release, timm
    < 0.9: ``layers.i.downsample`` for i < last) and at the start of stage i (timm >= 0.9:
    ``layers.i.downsample`` for i > 0); mmpretrain keeps it at the end (``stages.i.downsample``).
    ``relative_position_index`` and ``attn_mask`` buffers are rebuilt by mmpretrain, not copied
    (timm 1.0 does not save them at all); the index of each window is checked when present.
    """
    stages = sorted({int(m.group(1)) for k in sd
                     for m in [re.match(r'layers\.(\d+)\.', k)] if m})
    if not stages:
        raise ConversionError('no Swin stages (layers.N.*) found.')
    last = stages[-1]
    down = {int(m.group(1)) for k in sd for m in [re.match(r'layers\.(\d+)\.downsample\.', k)] if m}
    # downsample at the start of a stage (timm >= 0.9) iff stage 0 has none but the last has one
    at_start = bool(down) and 0 not in down and last in down
    backbone, head, left, notes = OrderedDict(), OrderedDict(), [], []
    for k, v in sd.items():
        m = re.match(r'layers\.(\d+)\.(.*)', k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            b = re.match(r'blocks\.(\d+)\.(.*)', rest)
            if b:
                j, brest = b.group(1), b.group(2)
                if brest == 'attn_mask':
                    continue
                if brest == 'attn.relative_position_index':
                    ws = int(round(v.shape[0] ** 0.5))
                    if not torch.equal(v.long(), swin_relative_position_index(ws)):
                        raise ConversionError(f'{k} is not the standard Swin index for a '
                                              f'{ws}x{ws} window.')
                    backbone[f'stages.{i}.blocks.{j}.attn.w_msa.relative_position_index'] = v
                    continue
                new = _map_block(brest, _SWIN_BLOCK)
                if new is None:
                    left.append(k)
                else:
                    backbone[f'stages.{i}.blocks.{j}.{new}'] = v
            elif rest.startswith('downsample.'):
                target = i - 1 if at_start else i
                name = rest[len('downsample.'):]
                if name == 'reduction.weight':
                    v = _merge_reduction_order(v)
                elif name in ('norm.weight', 'norm.bias'):
                    v = _merge_norm_order(v)
                else:
                    left.append(k)
                    continue
                backbone[f'stages.{target}.downsample.{name}'] = v
            else:
                left.append(k)
        elif k.startswith('patch_embed.proj.'):
            backbone['patch_embed.projection.' + k[len('patch_embed.proj.'):]] = v
        elif k.startswith('patch_embed.norm.'):
            backbone[k] = v
        elif k == 'absolute_pos_embed':
            backbone[k] = v
        elif k.startswith('norm.'):
            backbone[f'norm{last}.' + k[len('norm.'):]] = v
        elif k.startswith('head.fc.'):
            head['fc.' + k[len('head.fc.'):]] = v
        elif k.startswith('head.'):
            head['fc.' + k[len('head.'):]] = v
        else:
            left.append(k)
    # rebuild the relative position index where the source did not save it (timm >= 0.9)
    for k in list(backbone):
        if k.endswith('relative_position_bias_table'):
            idx = k.replace('bias_table', 'index')
            if idx not in backbone:
                ws = (int(round(backbone[k].shape[0] ** 0.5)) + 1) // 2
                backbone[idx] = swin_relative_position_index(ws)
    if left:
        raise ConversionError(f'Swin keys with no mmpretrain counterpart: {left[:10]}'
                              + (f' (+{len(left) - 10} more)' if len(left) > 10 else ''))
    notes.append('patch merging moved from the start of each stage (timm >= 0.9 layout)'
                 if at_start else
                 'patch merging at the end of each stage (official / timm < 0.9 layout)')
    return backbone, head, notes


def timm_to_mmpretrain(sd, arch=None, backbone_only=False):
    """timm-format state dict -> mmpretrain keys.

    Args:
        sd (dict): the timm state dict (see :func:`unwrap_state_dict`).
        arch (str, optional): ``'vit'`` or ``'swin'``; detected when None.
        backbone_only (bool): bare backbone keys, without the head. Otherwise a classifier
            state dict: ``backbone.*`` and ``head.*``, loadable by mmpretrain's
            ``ImageClassifier`` / ``TLAlignClassifier`` (DeiT: ``VisionTransformerClsHead``;
            Swin: ``LinearClsHead``) and, with ``prefix='backbone.'``, by the downstream
            configs.

    Returns:
        tuple: (state dict, arch, notes).
    """
    detected = detect_timm_arch(sd)
    if detected is None:
        mm = any(k.startswith(('backbone.', 'layers.0.ln1', 'stages.0.blocks')) for k in sd)
        hint = (' These already look like mmpretrain keys: no conversion needed'
                f' ({CONVERTER_CLS} extracts the backbone of a classifier).' if mm else '')
        raise ConversionError(f'not a timm ViT/DeiT or Swin state dict (first keys: '
                              f'{_first(sd)}).{hint}')
    arch = arch or detected
    if arch != detected:
        raise ConversionError(f'--arch {arch} given, but the keys are those of a timm {detected}.')
    backbone, head, notes = (timm_vit_to_mmpretrain if arch == 'vit'
                             else timm_swin_to_mmpretrain)(sd)
    if backbone_only:
        return backbone, arch, notes
    out = OrderedDict(('backbone.' + k, v) for k, v in backbone.items())
    out.update(('head.' + k, v) for k, v in head.items())
    return out, arch, notes
