"""The content share: how much of what a mixed image *shows* comes from the partner.

Framework-free (torch and numpy, no mmengine/mmpretrain), like :mod:`..alignment`.

Where the foreground of every image is known (the garment's pixels on a canvas, an object's
bounding box), a CutMix-mixed image shows the partner's foreground inside the box and its own
outside it. The content share is the partner's fraction of that visible foreground::

    partner_visible = sum_px  m * fg[partner]
    own_visible     = sum_px  (1 - m) * fg
    share           = partner_visible / (partner_visible + own_visible)

with ``m`` the pixel mask of the mix (1 where the pixel was pasted from the partner; a Mixup
blend weight where the images were blended). It is what an ideal label rule would give, and
the reference the ``label_fidelity`` evaluation stage measures the rules against.

**Nothing visible** (the box hides the image's own foreground and shows none of the
partner's, or neither image has any foreground): the share is undefined; it falls back to the
area share ``mean(m)``, the label plain CutMix would give.
"""
import numpy as np
import torch

from ...errors import UserInputError

#: what :func:`stack_fg_masks` tells a user whose samples carry no foreground mask
FG_MASK_HINT = ("add fg_mask via the canvas transform (dict(type='RandomCanvas')) or a "
                "dataset that yields it, and dict(type='PackInputs', algorithm_keys=['fg_mask']) "
                'in the pipeline')


def visible_foreground(fg, pixel_mask, partner):
    """Visible foreground of each mixed image, split by source.

    Args:
        fg (Tensor): (B, H, W) bool (or 0/1) foreground of the unmixed images.
        pixel_mask (Tensor): (B, H, W) in [0, 1], 1 where the pixel comes from the partner.
        partner (Tensor): (B,) index of each image's partner in the batch.

    Returns:
        tuple[Tensor, Tensor]: (B,) float64 partner and own visible foreground, in pixels.
    """
    if fg.dim() != 3 or tuple(pixel_mask.shape) != tuple(fg.shape):
        raise UserInputError(f'foreground masks {tuple(fg.shape)} and the pixel mask of the mix '
                             f'{tuple(pixel_mask.shape)} must both be (B, H, W) of the same '
                             'size: the foreground mask must describe the image as the model '
                             'sees it (after resize/crop).')
    # float64: exact pixel counts at any image size
    fg = fg.to(torch.float64)
    m = pixel_mask.to(device=fg.device, dtype=torch.float64)
    partner_visible = (m * fg[partner.to(fg.device)]).sum(dim=(1, 2))
    own_visible = ((1 - m) * fg).sum(dim=(1, 2))
    return partner_visible, own_visible


def content_share(fg, pixel_mask, partner):
    """(B,) fraction of the visible foreground of each mixed image that comes from its partner.

    Args:
        fg (Tensor): (B, H, W) bool foreground of the unmixed images, as the model sees them.
        pixel_mask (Tensor): (B, H, W) in [0, 1], 1 where the partner's pixels were pasted.
        partner (Tensor): (B,) index of each image's partner in the batch.

    Returns:
        Tensor: (B,) float32 on ``pixel_mask``'s device; where no foreground is visible, the
        area share ``mean(pixel_mask)`` (see the module docstring).
    """
    partner_visible, own_visible = visible_foreground(fg, pixel_mask, partner)
    total = partner_visible + own_visible
    area = pixel_mask.to(total.dtype).mean(dim=(1, 2)).to(total.device)
    share = torch.where(total > 0, partner_visible / total.clamp_min(1e-300), area)
    return share.to(device=pixel_mask.device, dtype=torch.float32)


def stack_fg_masks(masks, size, who):
    """(B, H, W) bool tensor of the samples' foreground masks.

    Args:
        masks (list): per sample ``data_sample.fg_mask`` (numpy array or tensor, (H, W)) or
            None where the sample has none.
        size (tuple[int, int]): (H, W) of the images the model sees.
        who (str): what needs the masks, for the error message.

    Returns:
        Tensor: (B, H, W) bool, on the CPU.
    """
    if not masks or any(m is None for m in masks):
        raise UserInputError(f'{who} needs the foreground mask of every image '
                             f'(data_sample.fg_mask), which this data lacks; {FG_MASK_HINT}.')
    fg = torch.stack([torch.as_tensor(np.asarray(m) if not torch.is_tensor(m) else m)
                      for m in masks]).bool()
    if fg.dim() != 3 or tuple(fg.shape[-2:]) != tuple(size):
        raise UserInputError(f'{who}: the foreground masks are {tuple(fg.shape[1:])} but the '
                             f'images {tuple(size)}; fg_mask must be (H, W) of the image as the '
                             'model sees it (made after every resize/crop of the pipeline).')
    return fg
