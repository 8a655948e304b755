"""Inference with trained TL-Align models through mmpretrain's own APIs (README "Inference").

``get_model(config, pretrained=ckpt)`` and ``ImageClassificationInferencer`` on our configs
(``custom_imports`` brings in mmtlalign), on real image files: a TL-Align DeiT trained by
``tools/train.py`` and the 1-channel Fashion-MNIST demo model, whose test pipeline turns the
3-channel images the inferencer reads into 28x28 grey ones.
"""
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.runner import save_checkpoint
from mmpretrain import ImageClassificationInferencer, get_model
from PIL import Image

import datagen

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(ROOT, 'configs', 'tlalign', 'demo', 'fmnist_vit_tlalign.py')
FMNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                  'Sneaker', 'Bag', 'Ankle boot')


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """As in a fresh process: earlier tests (mmseg / mmdet runs) leave their scope current, and
    the inferencer would then build its pipeline from that toolbox's transforms."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture(scope='module')
def demo_checkpoint(tmp_path_factory):
    """The demo TL-Align model's weights, saved as mmengine saves them (with class names)."""
    torch.manual_seed(0)
    model = get_model(DEMO)
    path = str(tmp_path_factory.mktemp('demo') / 'demo.pth')
    save_checkpoint(dict(state_dict=model.state_dict(),
                         meta=dict(dataset_meta=dict(classes=FMNIST_CLASSES))), path)
    return path, model.state_dict()


def write_rgb_png(path, size, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def expected_demo_scores(model, png):
    """Independent of mmpretrain's pipeline: ITU-R 601 luma of the RGB file (as uint8), the
    demo's normalisation, the model's forward, softmax."""
    rgb = np.asarray(Image.open(png).convert('RGB'), dtype=np.float64)
    weights = np.array([0.114, 0.587, 0.299]) / 1.0
    grey = (rgb[..., ::-1] * (weights / weights.sum())).sum(axis=2).astype(np.uint8)
    x = (torch.from_numpy(grey).float() - 72.94) / 90.01
    with torch.no_grad():
        logits = model.head(model.backbone(x[None, None]))
    return torch.softmax(logits, dim=1)[0].numpy()


def test_get_model_loads_the_demo_checkpoint(demo_checkpoint):
    ckpt, state = demo_checkpoint
    model = get_model(DEMO, pretrained=ckpt)
    assert type(model.backbone).__name__ == 'AlignedVisionTransformer'
    assert model.backbone.patch_embed.projection.in_channels == 1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)


def test_inferencer_takes_colour_image_files_for_the_grey_demo_model(demo_checkpoint,
                                                                     tmp_path):
    ckpt, _ = demo_checkpoint
    inferencer = ImageClassificationInferencer(DEMO, pretrained=ckpt, device='cpu')
    png = write_rgb_png(str(tmp_path / 'img28.png'), (28, 28))
    result = inferencer(png)[0]
    assert result['pred_scores'].shape == (10, )
    assert result['pred_class'] == FMNIST_CLASSES[result['pred_label']]
    np.testing.assert_allclose(result['pred_scores'], expected_demo_scores(inferencer.model, png),
                               rtol=1e-5, atol=1e-6)
    # any size: resized to the model's 28x28 on the way in
    big = write_rgb_png(str(tmp_path / 'img60x45.png'), (60, 45), seed=1)
    results = inferencer([png, big], batch_size=2)
    assert [r['pred_scores'].shape for r in results] == [(10, ), (10, )]


TINY_TLALIGN = datagen.tiny_deit_config(osp.join(ROOT, 'configs/tlalign/deit-t_8xb128.py'),
                                        num_classes=4)  # get_model reads it without options


@pytest.mark.slow
def test_inference_on_a_trained_tlalign_checkpoint(tmp_path):
    """A checkpoint saved by the mmengine Runner (tools/train.py): both APIs load it (under
    weights_only) and agree with each other and with the model's own predict()."""
    data = datagen.make_imagenet(str(tmp_path / 'imagenet'), per_class=2, val_per_class=1)
    config = tmp_path / 'tiny_tlalign.py'
    config.write_text(TINY_TLALIGN)
    work_dir = str(tmp_path / 'work')
    result = datagen.train_tool(config, work_dir, data, '--no-validate')
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = osp.join(work_dir, 'epoch_1.pth')

    model = get_model(str(config), pretrained=ckpt)
    saved = torch.load(ckpt, map_location='cpu', weights_only=False)['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key], msg=key)

    image = osp.join(data, 'val', sorted(os.listdir(osp.join(data, 'val')))[0])
    inferencer = ImageClassificationInferencer(str(config), pretrained=ckpt, device='cpu')
    out = inferencer(image)[0]
    assert out['pred_scores'].shape == (4, )
    # the same image through the test dataloader's pipeline (LoadImageFromFile and all)
    model.eval()
    with torch.no_grad():
        pred = model.test_step(dataloader_batch(str(config), image))[0]
    np.testing.assert_allclose(out['pred_scores'], pred.pred_score.numpy(), rtol=1e-5)
    assert out['pred_label'] == pred.pred_label.item()


def dataloader_batch(config, image):
    """One image as the config's test dataloader would give it."""
    from mmengine.config import Config
    from mmengine.dataset import Compose, pseudo_collate
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    pipeline = Compose(cfg.test_dataloader.dataset.pipeline)
    return pseudo_collate([pipeline(dict(img_path=image))])
