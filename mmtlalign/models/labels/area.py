"""Area labels: plain CutMix / Mixup."""
from .base import LABEL_RULES, LabelRule


@LABEL_RULES.register_module()
class AreaLabel(LabelRule):
    """The partner share of the output is the partner's share of the image area (1 - lambda),
    whatever the network attends to. The baseline (``align=False``); any backbone."""

    def mixed_share(self, backbone, mixed, dense=False):
        if dense:
            outs, tokens = backbone.forward_tokens(mixed.inputs)
            return outs, mixed.area_share, tokens, None
        return backbone(mixed.inputs), mixed.area_share
