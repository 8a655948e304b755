"""Calibration of a classifier on clean images: expected calibration error (ECE, 15 equal-width
confidence bins, torchmetrics' ``MulticlassCalibrationError``), negative log-likelihood (torch's
cross entropy of the logits) and the reliability diagram's bins.

``ECE = sum over bins b of |B_b|/N * |acc(B_b) - conf(B_b)|``, where conf is the top-1 softmax
probability and acc whether the top-1 class is right (Guo et al., ICML 2017). A perfectly
calibrated model is right 70% of the time when it says 70%; the reliability diagram plots
acc(B_b) against conf(B_b).
"""
import torch
import torch.nn.functional as F

from ..errors import UserInputError

N_BINS = 15


def _torchmetrics():
    try:
        from torchmetrics.classification import MulticlassCalibrationError
    except ImportError as e:
        raise UserInputError('the calibration stage needs torchmetrics: pip install '
                             'torchmetrics==1.9.0 (see requirements/pins.txt).') from e
    return MulticlassCalibrationError


def reliability_bins(probs, labels, n_bins=N_BINS):
    """The reliability diagram: per equal-width confidence bin, its count, mean confidence and
    accuracy.

    Args:
        probs (Tensor): ``(N, K)`` softmax probabilities.
        labels (Tensor): ``(N,)`` true classes.

    Returns:
        dict: ``edges`` (n_bins + 1), ``count``, ``confidence``, ``accuracy`` (n_bins each;
        None for an empty bin).
    """
    conf, pred = probs.max(1)
    right = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    # bin b holds conf in (edges[b], edges[b+1]] (as torchmetrics bins them)
    index = (torch.bucketize(conf, edges[1:-1], right=False)).clamp(0, n_bins - 1)
    count, confidence, accuracy = [], [], []
    for b in range(n_bins):
        sel = index == b
        n = int(sel.sum())
        count.append(n)
        confidence.append(float(conf[sel].mean()) if n else None)
        accuracy.append(float(right[sel].mean()) if n else None)
    return dict(edges=[float(e) for e in edges], count=count, confidence=confidence,
                accuracy=accuracy)


def calibration(logits, labels, n_bins=N_BINS):
    """ECE (%), NLL (nats per image) and the reliability bins of clean predictions.

    Args:
        logits (Tensor): ``(N, K)`` raw class scores.
        labels (Tensor): ``(N,)`` true classes.

    Returns:
        dict: ``ece`` (percent), ``nll``, ``top1`` (percent), ``bins`` (see
        :func:`reliability_bins`).
    """
    logits, labels = logits.float(), labels.long()
    metric = _torchmetrics()(num_classes=logits.shape[1], n_bins=n_bins, norm='l1')
    probs = logits.softmax(1)
    ece = float(metric(probs, labels)) * 100.0
    nll = float(F.cross_entropy(logits, labels))
    top1 = float((probs.argmax(1) == labels).float().mean()) * 100.0
    return dict(ece=ece, nll=nll, top1=top1, bins=reliability_bins(probs, labels, n_bins))
