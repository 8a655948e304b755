"""A trained classifier and a validation loader, built from a config and a checkpoint through the
registries (mmpretrain's ``MODELS``/``DATASETS``, mmengine's ``load_checkpoint`` — the safe
loader — and ``Runner.build_dataloader``), and one batched prediction loop with an optional
perturbation of the raw images.
"""
import copy
import os.path as osp

import torch

from ..engine.data_checks import checked_pipeline
from ..errors import UserInputError


def build_classifier(cfg, checkpoint, device='cpu'):
    """The config's model with the checkpoint's weights, in eval mode on ``device``."""
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS
    if not osp.isfile(checkpoint):
        raise UserInputError(f'checkpoint {checkpoint!r} does not exist.')
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # as the Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model_cfg.pop('init_cfg', None)
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.pop('init_cfg', None)  # the weights come from the checkpoint
    model = MODELS.build(model_cfg)
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True, logger='silent')
    return model.to(device).eval()


def patch_size_of(model):
    """Side (pixels) of the backbone's patch tokens (ViT: 16 / the demo's 7; Swin: 4)."""
    size = getattr(model, 'patch_size', None) or getattr(model.backbone, 'patch_size', None)
    if size is None and hasattr(model.backbone, 'patch_embed'):
        size = model.backbone.patch_embed.projection.stride
    if size is None:
        raise UserInputError('cannot tell the backbone\'s patch size; give the occlusion stage '
                             'patch_size=... explicitly.')
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    return int(size[0])


def _with_subset(dataset_cfg, num_images):
    """The dataset config restricted to its first ``num_images`` samples."""
    if not num_images:
        return dataset_cfg
    dataset_cfg = copy.deepcopy(dataset_cfg)
    current = dataset_cfg.get('indices')
    if current is None:
        dataset_cfg['indices'] = int(num_images)
    elif isinstance(current, int):
        dataset_cfg['indices'] = min(current, int(num_images))
    else:
        dataset_cfg['indices'] = list(current)[:int(num_images)]
    return dataset_cfg


class Evaluator:
    """Predictions of one trained model on (perturbed) validation images.

    Args:
        cfg (Config): the model's training config (its ``test_dataloader`` is the clean set).
        checkpoint (str): the weights.
        batch_size (int, optional): evaluation batch size (default: the config's test batch).
        device (str, optional): default ``cuda`` when available, else ``cpu``.
        cache_dir (str, optional): where computed corruptions are kept for other cells.
    """

    #: raw batches of a loader are kept in memory below this size (the small sets of a CPU run)
    CACHE_BYTES = 512 * 2 ** 20

    def __init__(self, cfg, checkpoint, batch_size=None, device=None, cache_dir=None):
        self.cfg = cfg
        self.cache_dir = cache_dir  # perturbed images shared by the cells of a suite
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.model = build_classifier(cfg, checkpoint, self.device)
        self.batch_size = batch_size
        self._cache = {}

    @property
    def num_classes(self):
        return int(self.model.head.num_classes)

    def fill_value(self, channels):
        """``(C,)`` uint8 pixel value that normalises to 0 (the preprocessor's mean)."""
        mean = getattr(self.model.data_preprocessor, 'mean', None)
        if mean is None or not getattr(self.model.data_preprocessor, '_enable_normalize', True):
            return torch.zeros(channels, dtype=torch.uint8)
        mean = mean.flatten().cpu()
        if getattr(self.model.data_preprocessor, '_channel_conversion', False):
            mean = mean.flip(0)  # the mean is given in RGB, the raw images are BGR
        if mean.numel() != channels:
            mean = mean.mean().repeat(channels)
        return mean.round().clamp(0, 255).to(torch.uint8)

    def dataset_config(self, dataset=None, num_images=None):
        """The clean test set's config, or ``dataset`` with the test pipeline."""
        loader = self.cfg.get('test_dataloader') or self.cfg.get('val_dataloader')
        if not loader:
            raise UserInputError('the config has no test_dataloader or val_dataloader to '
                                 'evaluate on.')
        ds = copy.deepcopy(loader['dataset'])
        if dataset is not None:
            dataset = copy.deepcopy(dict(dataset))
            dataset.setdefault('pipeline', ds.get('pipeline', []))
            ds = dataset
        if ds.get('pipeline') is not None:  # no Runner here, so no DataCheckHook to do it
            ds['pipeline'] = checked_pipeline(ds['pipeline'])
        return _with_subset(ds, num_images)

    def loader(self, dataset=None, num_images=None):
        """A sequential loader over the clean test set (or ``dataset``)."""
        from mmengine.runner import Runner
        loader = copy.deepcopy(self.cfg.get('test_dataloader') or self.cfg.val_dataloader)
        loader = dict(loader)
        loader['dataset'] = self.dataset_config(dataset, num_images)
        loader['sampler'] = dict(type='DefaultSampler', shuffle=False)
        loader['persistent_workers'] = False
        if self.batch_size:
            loader['batch_size'] = self.batch_size
        return Runner.build_dataloader(loader, seed=0)

    def batches(self, dataset=None, num_images=None):
        """``(images (B, C, H, W) uint8, labels (B,), sample_idx (B,))`` of every batch; kept in
        memory after the first pass when the set is small."""
        key = (repr(dataset), num_images)
        if key in self._cache:
            yield from self._cache[key]
            return
        kept, size = [], 0
        for data in self.loader(dataset, num_images):
            inputs = data['inputs']
            images = torch.stack(list(inputs)) if isinstance(inputs, (list, tuple)) else inputs
            samples = data['data_samples']
            labels = torch.cat([s.gt_label.view(-1)[:1] for s in samples]).long()
            idx = [int(s.sample_idx) for s in samples]
            batch = (images, labels, idx)
            size += images.numel() * images.element_size()
            if kept is not None and size <= self.CACHE_BYTES:
                kept.append(batch)
            else:
                kept = None
            yield batch
        if kept is not None:
            self._cache[key] = kept

    @torch.no_grad()
    def logits(self, images):
        """``(B, K)`` logits of raw ``(B, C, H, W)`` uint8 images (preprocessed as in test)."""
        data = self.model.data_preprocessor(dict(inputs=images.to(self.device),
                                                 data_samples=None), False)
        out = self.model(data['inputs'], mode='tensor')
        if isinstance(out, (list, tuple)):
            out = out[-1]
        return out.float().cpu()

    def predict(self, perturb=None, dataset=None, num_images=None):
        """Logits of the whole set, each batch first passed through ``perturb``.

        Args:
            perturb (callable, optional): ``perturb(images, sample_idx) -> images`` on raw
                ``(B, C, H, W)`` uint8 images.

        Returns:
            dict: ``logits (N, K)``, ``labels (N,)``, ``sample_idx (N,)``.
        """
        logits, labels, index = [], [], []
        for images, y, idx in self.batches(dataset, num_images):
            if perturb is not None:
                images = perturb(images, idx)
            logits.append(self.logits(images))
            labels.append(y)
            index += idx
        if not logits:
            raise UserInputError('the evaluation set is empty.')
        return dict(logits=torch.cat(logits), labels=torch.cat(labels),
                    sample_idx=torch.as_tensor(index))


def top1(logits, labels, subset=None):
    """Top-1 accuracy (%); with ``subset`` (class indices), the argmax over those logits only
    (the ImageNet-A/-R protocol), mapped back to the full class index."""
    if subset is not None:
        subset = torch.as_tensor(subset, dtype=torch.long)
        pred = subset[logits[:, subset].argmax(1)]
    else:
        pred = logits.argmax(1)
    return float((pred == labels).float().mean()) * 100.0


def correct(logits, labels, subset=None):
    """``(N,)`` bool: whether each image's top-1 is right (see :func:`top1`)."""
    if subset is not None:
        subset = torch.as_tensor(subset, dtype=torch.long)
        return subset[logits[:, subset].argmax(1)] == labels
    return logits.argmax(1) == labels
