# Multi-scale + flip test (ratios 0.5-1.75 of mmseg's ADE20K TTA) of
# upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py; for tools/test.py.
_base_ = './upernet_tlalign-deit-s_mln_8xb2-160k_ade20k-512x512.py'

model = dict(_delete_=True, type='SegTTAModel', module={{_base_.model}})
test_dataloader = dict(dataset=dict(pipeline={{_base_.tta_pipeline}}))
