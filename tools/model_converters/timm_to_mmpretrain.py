"""Convert timm-format ViT/DeiT or Swin weights to mmpretrain keys.

Sources: the official TL-Align / DeiT releases (timm 0.3 ``VisionTransformer``), the official
Swin release, and timm ``VisionTransformer`` / ``SwinTransformer`` state dicts up to timm 1.0
(both Swin patch-merging layouts; ``relative_position_index`` rebuilt where timm does not save
it). Checked against timm itself: same features from the converted mmpretrain backbone.

    python tools/model_converters/timm_to_mmpretrain.py SRC.pth DST.pth [--backbone-only]

By default DST is a classifier checkpoint (``backbone.*`` + ``head.*``): it loads into
``configs/tlalign/deit-*`` / ``swin-*`` for ImageNet evaluation (tools/test.py) and, with
``prefix='backbone.'``, into the downstream configs in configs/tlalign/{ade20k,coco}.
``--backbone-only`` writes the bare backbone keys (load without a prefix).
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='timm weights -> mmpretrain keys (mmtlalign).')
    parser.add_argument('src', help='timm-format checkpoint (.pth); a {"model": ...} wrapper '
                        'is unwrapped')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--arch', choices=['vit', 'swin'], help='check the detected family')
    parser.add_argument('--backbone-only', action='store_true',
                        help='bare backbone keys, no head and no backbone. prefix')
    parser.add_argument('--trust-checkpoint', action='store_true',
                        help='unpickle the source fully (only for files you trust)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from mmtlalign.checkpoint import convert as converters
    if not osp.isfile(args.src):
        sys.exit(f'error: checkpoint {args.src!r} does not exist.')
    try:
        ckpt = converters.load_checkpoint_file(args.src, trust=args.trust_checkpoint)
        sd = converters.unwrap_state_dict(ckpt)
        out, arch, notes = converters.timm_to_mmpretrain(
            sd, arch=args.arch, backbone_only=args.backbone_only)
    except converters.ConversionError as e:
        sys.exit(f'error: {args.src}: {e}')
    meta = dict(mmtlalign_converted=f'timm {arch} -> mmpretrain by '
                f'{converters.CONVERTER_TIMM}' + (' (backbone only)' if args.backbone_only else ''),
                source=osp.basename(args.src))
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': out}, args.dst)
    for note in notes:
        print(f'note: {note}')
    print(f'timm {arch}: {len(sd)} tensors -> {len(out)} mmpretrain tensors -> {args.dst}')


if __name__ == '__main__':
    main()
