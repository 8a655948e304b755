# Canvas demo, CutMix arm (issue 33): fmnist_vit_cutmix.py with every garment on a 56x56 black
# canvas, at a random position for training (the whole garment, never cut) and centred for
# validation and test (mmtlalign/datasets/canvas.py, RandomCanvas). The garment covers a quarter
# of the image, so a CutMix box often lands on background and the area share of a box is no
# longer the share of the visible garment it carries: the regime the label rules can differ in.
# Same ViT on 7-px patches, now an 8x8 token grid (+ class token).
#
#   python tools/train.py configs/tlalign/demo/fmnist_canvas_vit_cutmix.py
#
# The other arms (fmnist_canvas_vit_{tlalign,transmix,oracle}.py) differ only in model.align.
# Every sample carries its garment's pixels as data_sample.fg_mask (bool, 56x56) for the
# content-share label rule (the oracle arm) and the label_fidelity evaluation stage.
_base_ = './fmnist_vit_cutmix.py'

canvas_size = 56

model = dict(backbone=dict(img_size=canvas_size))  # patch_size 7: an 8x8 token grid

train_pipeline = [
    dict(type='RandomCanvas', canvas_size=canvas_size),
    dict(type='PackInputs', algorithm_keys=['fg_mask']),
]
# as fmnist_vit_cutmix.py (grey, 28x28 for the inferencer's image files), then centred
test_pipeline = [
    dict(type='RandomGrayscale', prob=1.0, channel_weights=(0.114, 0.587, 0.299)),
    dict(type='ResizeEdge', scale=28, edge='short'),
    dict(type='CenterCrop', crop_size=28),
    dict(type='RandomCanvas', canvas_size=canvas_size, random=False),
    dict(type='PackInputs', algorithm_keys=['fg_mask']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
