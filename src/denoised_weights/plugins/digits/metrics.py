"""Classification metrics on logits ``[n, classes]`` and integer labels ``[n]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Metric


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.dim() != 2 or target.dim() != 1 or len(pred) != len(target):
        raise ValueError(
            "classification metrics take logits [n, classes] and labels [n], got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


class Accuracy(Metric):
    """The share of examples whose largest logit is the label (torchmetrics, micro average)."""

    name = "accuracy"
    higher_is_better = True

    def __init__(self, num_classes: int = 10) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        self._metric = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.count = 0

    def reset(self) -> None:
        self._metric.reset()
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        _check(pred, target)
        self._metric.update(pred.detach().float().cpu(), target.detach().long().cpu())
        self.count += len(target)

    def compute(self) -> float:
        if not self.count:
            raise DnwError("accuracy needs at least one example")
        return float(self._metric.compute())


class CrossEntropy(Metric):
    """Mean cross-entropy (nats) of the logits against the labels."""

    name = "cross-entropy"
    higher_is_better = False

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        _check(pred, target)
        with torch.no_grad():
            loss = F.cross_entropy(pred.detach().double(), target.long(), reduction="sum")
        self.total += float(loss)
        self.count += len(target)

    def compute(self) -> float:
        if not self.count:
            raise DnwError("cross-entropy needs at least one example")
        return self.total / self.count
