# Multi-scale + flip test (ratios 0.5-1.75 of mmseg's ADE20K TTA) of
# upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py; for tools/test.py:
#
#   python tools/test.py configs/tlalign/ade20k/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512_ms.py \
#       work_dirs/upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512/iter_160000.pth
_base_ = './upernet_tlalign-swin-t_8xb2-160k_ade20k-512x512.py'

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline={{_base_.tta_pipeline}}))
