"""Extract the backbone of a classifier checkpoint, for mmdet / mmseg.

    python tools/model_converters/cls_to_backbone.py CLS_CKPT.pth BACKBONE.pth

The output holds ``state_dict`` (the backbone's keys, ``backbone.`` removed) and ``meta``;
optimizer state and the message hub are dropped. Load it downstream with
``init_cfg=dict(type='Pretrained', checkpoint='BACKBONE.pth')`` (no prefix). The classifier
checkpoint itself also works directly, with ``prefix='backbone.'`` (what the configs in
configs/tlalign/{ade20k,coco} do).
"""
import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Classifier checkpoint -> backbone-only checkpoint (mmtlalign).')
    parser.add_argument('src', help='classifier checkpoint (keys backbone.*, head.*)')
    parser.add_argument('dst', help='output backbone checkpoint')
    parser.add_argument('--prefix', default='backbone.', help='prefix to extract and strip')
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
        out = converters.classifier_to_backbone(ckpt, prefix=args.prefix)
    except converters.ConversionError as e:
        sys.exit(f'error: {args.src}: {e}')
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(out, args.dst)
    print(f'{len(out["state_dict"])} backbone tensors -> {args.dst}')


if __name__ == '__main__':
    main()
