"""The subtype classifier: a learned measuring instrument for gene control.

A tiny CNN is trained on real tumour slices to read their subtype, then applied to synthetic ones:
a synthesis that follows its donor's genes should be read as the donor's subtype
(the ``subtype`` section of :func:`radiolib.evaluation.evaluate_synthesis`). Slices are numpy
arrays (N, H, W) in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from radiolib.models import eval_mode


class SubtypeCNN(nn.Module):
    """Tiny classifier: (B, 1, H, W) in [0, 1] -> (B, K) logits.

    Two stride-2 convolutions, global average pooling and a linear layer (about 1.5k weights):
    enough to read size, density and margin, small enough to train in seconds on a CPU.
    """

    def __init__(self, n_classes: int, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(4 * width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # mean and max pooling: mean reads density, max reads the brightest structure
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1))


def train_subtype_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    steps: int = 300,
    seed: int = 0,
    batch_size: int = 32,
    lr: float = 3e-3,
) -> SubtypeCNN:
    """Train :class:`SubtypeCNN` on slices (N, H, W) in [0, 1] with labels (N,) in 0..K-1.

    Deterministic for a seed (own RNG for weights and batches; global torch RNG untouched).
    Returns the model in eval mode on the CPU.
    """
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    y = torch.as_tensor(np.asarray(labels)).long()
    if x.ndim != 4 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"expected images (N, H, W) and labels (N,), got {images.shape}, {np.shape(labels)}"
        )
    if y.min() < 0:
        raise ValueError("labels must be integers 0..K-1")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SubtypeCNN(int(y.max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def classifier_predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class (N,) for slices (N, H, W) in [0, 1], the model in eval mode."""
    x = torch.as_tensor(np.asarray(images, np.float32))[:, None]
    with eval_mode(model):
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        ).numpy()


def classifier_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of slices (N, H, W) whose predicted class equals ``labels`` (N,)."""
    labels = np.asarray(labels)
    if len(labels) != len(images) or len(labels) == 0:
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return float(np.mean(classifier_predict(model, images) == labels))
