"""Label rules for mixed batches, siblings behind one interface (:class:`LabelRule`): each
turns the mixed batch and the backbone's forward pass into the partner share of the output."""
from .area import AreaLabel
from .base import LABEL_RULES, LabelRule, RuleLossInputs, build_label_rule
from .content_label import ContentLabel
from .pal import PALLabel
from .smmix import SMMixLabel
from .tlalign import TLAlignLabel
from .transmix import TransMixLabel

__all__ = [
    'AreaLabel', 'ContentLabel', 'LABEL_RULES', 'LabelRule', 'PALLabel', 'RuleLossInputs',
    'SMMixLabel', 'TLAlignLabel', 'TransMixLabel', 'build_label_rule'
]
