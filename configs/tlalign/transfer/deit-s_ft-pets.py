# Transfer to Oxford-IIIT Pets (37 classes, mmpretrain's OxfordIIITPet layout:
# data/Oxford-IIIT_Pets/{images/*.jpg,annotations/{trainval,test}.txt}); the same short
# recipe as deit-s_ft-cifar100.py. Image files load as BGR: the preprocessor turns them to RGB.
_base_ = './deit-s_ft-cifar100.py'

num_classes = 37
model = dict(head=dict(num_classes=num_classes))
data_preprocessor = dict(num_classes=num_classes, to_rgb=True)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
dataset = dict(type='OxfordIIITPet', data_root='data/Oxford-IIIT_Pets')
train_dataloader = dict(dataset=dict(_delete_=True, split='trainval', pipeline=train_pipeline,
                                     **dataset))
val_dataloader = dict(dataset=dict(_delete_=True, split='test', pipeline=test_pipeline,
                                   **dataset))
test_dataloader = val_dataloader
