"""The oracle label: the partner's share of the visible foreground, where it is known."""
from ...errors import UserInputError
from .base import LABEL_RULES, LabelRule
from .content import content_share


@LABEL_RULES.register_module()
class ContentLabel(LabelRule):
    """The partner share of the output is the content share
    (:func:`~mmtlalign.models.labels.content.content_share`): the fraction of the mixed
    image's visible foreground that came from the partner, whatever the network attends to.

    An oracle, not a method: it needs each training image's foreground mask
    (``data_sample.fg_mask``, e.g. from the ``RandomCanvas`` transform, packed with
    ``PackInputs(algorithm_keys=['fg_mask'])``), which :class:`TLAlignClassifier` puts on the
    mixed batch (``mixed.fg_mask``), and the mixer's pixel mask (``mixed.pixel_mask``:
    :class:`TLAlignMix`, CutMix or Mixup). It bounds what better labels can do for accuracy.
    Where nothing is visible, the area share (see :mod:`.content`). Any backbone.
    """

    #: the classifier hands the batch's foreground masks over as ``mixed.fg_mask``
    needs_fg_mask = True

    def __call__(self, backbone, mixed, dense=False):
        # not the base's short cut for uniform batches: a Mixup blend has uniform token
        # shares but not a uniform content share
        share = self.content(mixed)
        if dense:
            outs, tokens = backbone.forward_tokens(mixed.inputs)
            return outs, share, tokens, None
        return backbone(mixed.inputs), share

    def mixed_share(self, backbone, mixed, dense=False):
        return self(backbone, mixed, dense)

    @staticmethod
    def content(mixed):
        """(B,) content share of a mixed batch."""
        if mixed.fg_mask is None:
            raise UserInputError('ContentLabel needs the foreground masks of the batch '
                                 '(mixed.fg_mask); train it with TLAlignClassifier on data '
                                 'that carries fg_mask.')
        if mixed.pixel_mask is None:
            if not bool(mixed.mixed.any()):  # nothing pasted: the own image only
                return mixed.area_share.float()
            raise UserInputError(f'ContentLabel needs the pixel mask of the mix, which the '
                                 f'{mixed.kind or "this"} mixer does not keep; use '
                                 "mix=dict(type='TLAlignMix') (CutMix / Mixup).")
        return content_share(mixed.fg_mask.to(mixed.inputs.device), mixed.pixel_mask,
                             mixed.partner)
