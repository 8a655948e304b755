"""Dense supervision of the output tokens with their own labels (``token_loss``).

TL-Align traces a partner share for *every* token through every block and then reads only
the one the head consumes. Token Labeling (LV-ViT, Jiang et al., NeurIPS 2021) showed that
supervising every output patch token with its own location-specific label helps ViTs, but
it takes its dense labels from a large pretrained annotator. Here each output token ``i`` gets
the target

    t_i = (1 - s_i) * y_a + s_i * y_b

from its own partner share ``s_i``: ``'traced'`` -- the share TL-Align traced to that token
(it follows the token's drift, no teacher, no extra pass) -- or ``'origin'`` -- the share the
token started with (MixToken's form: where its patch came from), the ablation that separates
"dense" from "traced". The classifier adds ``weight * mean_i H(token_i, t_i)`` to the class
token's loss, with the head's own loss module (so the recipe's label smoothing applies).

Framework-light: plain torch plus the user-input errors.
"""
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F

from ..errors import UserInputError, UserTypeError

LABELS = ('traced', 'origin')
HEADS = ('shared', 'separate')


@dataclass(frozen=True)
class TokenLossConfig:
    """The classifier's ``token_loss`` argument, checked.

    Attributes:
        weight (float): beta of LV-ViT, the weight of the mean token loss (0.5 there).
        labels (str): ``'traced'`` (TL-Align's per-token shares) or ``'origin'`` (each
            token's starting share, the MixToken label).
        head (str): ``'shared'`` (the classifier's head classifies every token) or
            ``'separate'`` (an extra linear token head, as LV-ViT's auxiliary head).
    """
    weight: float = 0.5
    labels: str = 'traced'
    head: str = 'shared'


def build_token_loss_config(token_loss):
    """``token_loss`` (None or a dict) -> :class:`TokenLossConfig` or None, with one-line
    errors for bad values."""
    if token_loss is None or isinstance(token_loss, TokenLossConfig):
        return token_loss
    if not isinstance(token_loss, dict):
        raise UserTypeError(f"model.token_loss must be None or a dict like dict(weight=0.5, "
                            f"labels='traced', head='shared'), got {token_loss!r}.")
    unknown = sorted(set(token_loss) - {'weight', 'labels', 'head'})
    if unknown:
        raise UserInputError(f'model.token_loss: unknown key(s) {unknown}; allowed: weight, '
                             'labels, head.')
    cfg = TokenLossConfig(**token_loss)
    if isinstance(cfg.weight, bool) or not isinstance(cfg.weight, Real) or not cfg.weight > 0:
        raise UserInputError(f'model.token_loss.weight must be a number > 0, got '
                             f'{cfg.weight!r} (set token_loss=None to switch it off).')
    if cfg.labels not in LABELS:
        raise UserInputError(f'model.token_loss.labels must be one of {LABELS}, got '
                             f'{cfg.labels!r}.')
    if cfg.head not in HEADS:
        raise UserInputError(f'model.token_loss.head must be one of {HEADS}, got '
                             f'{cfg.head!r}.')
    return TokenLossConfig(float(cfg.weight), cfg.labels, cfg.head)


def token_targets(labels, partner, token_share, num_classes):
    """Soft target of every token, ``(1 - s_i) * y_a + s_i * y_b``.

    Args:
        labels (Tensor): (B,) int class indices of the images.
        partner (Tensor): (B,) int index of each image's partner in the batch.
        token_share (Tensor): (B, N) partner share of each output token.
        num_classes (int): K.

    Returns:
        Tensor: (B, N, K) rows summing to one, without gradient.
    """
    y_a = F.one_hot(labels, num_classes).to(token_share.dtype)
    y_b = y_a[partner]
    s = token_share.detach()[..., None]
    return torch.lerp(y_a[:, None], y_b[:, None], s)


def build_token_head(in_channels, num_classes):
    """The ``'separate'`` token head: a linear layer, TruncNormal(0.02) weights, zero bias.

    Built under a forked random state, so that adding it does not change the random numbers
    of anything built or initialised after it (same-seed arms keep the same backbone and head
    weights).
    """
    with torch.random.fork_rng(devices=[]):
        head = torch.nn.Linear(in_channels, num_classes)
        torch.nn.init.trunc_normal_(head.weight, std=0.02)
        torch.nn.init.zeros_(head.bias)
    return head
