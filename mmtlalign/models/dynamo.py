"""Keep torch.compile (dynamo) from breaking the graph in every block of an mmpretrain backbone.

mmpretrain builds its stochastic-depth rates with ``np.linspace``, so every mmcv ``DropPath``
holds a ``numpy.float64`` ``drop_prob``. ``drop_path`` starts with ``if drop_prob == 0. or not
training``; dynamo traces numpy scalars as (numpy) tensors, so that test is data-dependent
control flow and the graph breaks -- twice per block. Each block then resumes in a frame of its
own; in the aligned ViT the resumed frames read the tracer's per-block state (``len(history)``)
and are compiled again for every block, until dynamo's recompile limit (8) stops compiling.

With ``drop_prob`` a Python float (the same value, so results are bit-identical) the forward of
a ViT, aligned or not, is one graph for all its blocks.
"""
from mmcv.cnn.bricks.drop import DropPath


def python_drop_probs(module):
    """Turn the numpy ``drop_prob`` of every mmcv ``DropPath`` inside ``module`` into a float.

    Args:
        module (nn.Module): e.g. a backbone or a whole classifier.

    Returns:
        int: how many ``DropPath`` modules were changed.
    """
    changed = 0
    for m in module.modules():
        if isinstance(m, DropPath) and type(m.drop_prob) is not float:
            m.drop_prob = float(m.drop_prob)
            changed += 1
    return changed
