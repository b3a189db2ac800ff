"""Building blocks shared by the three GANs: shape checks, the gene mapping, AdaIN, fusion.

Every block is channels_last friendly (no ``.view`` on tensors that may be non-contiguous) and
autocast friendly (normalisation statistics are taken in float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from radiolib.config import image_size_problem
from radiolib.distributed import GroupedBatchNorm

LRELU_SLOPE = 0.2


def check_shape(tensor: Tensor, expected: Sequence[int | None], name: str) -> None:
    """Raise ``ValueError`` unless ``tensor`` has ``expected`` shape (``None`` matches any size).

    The message names the argument, the expected shape (``B`` for free sizes) and the one found.
    """
    if not isinstance(tensor, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    shown = "(" + ", ".join("B" if s is None else str(s) for s in expected) + ")"
    if tensor.dim() != len(expected) or any(
        s is not None and s != t for s, t in zip(expected, tensor.shape, strict=True)
    ):
        raise ValueError(f"{name} must have shape {shown}, got {tuple(tensor.shape)}")


def channel_schedule(image_size: int, width: int) -> dict[int, int]:
    """Channels per resolution, ``{S: width, S/2: width, S/4: 2 width, ...}`` capped at 4 width.

    The two finest levels share the base width and the coarser ones double, so each level's
    convolution cost stays about constant while the finest (most expensive) level stays lean.
    Resolutions run from ``image_size`` down to the 4 x 4 bottleneck.
    """
    if problem := image_size_problem(image_size):
        raise ValueError(problem)
    if width < 1:
        raise ValueError(f"channel width must be >= 1, got {width}")
    out = {}
    for k in range(int(math.log2(image_size)) - 1):  # S, S/2, ..., 4
        out[image_size >> k] = width * min(2 ** max(k - 1, 0), 4)
    return out


def init_weights(module: nn.Module) -> None:
    """Convolutions N(0, 0.02^2) (DCGAN), norm scales N(1, 0.02^2), biases 0; fully connected
    layers N(0, 1 / fan_in) (LeCun), so the gene code and the AdaIN styles start with entries
    of order one whatever the number of genes (with std 0.02 they would scale as
    0.02 sqrt(fan_in): 1.4 for 5172 genes, 0.09 for 20)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, m.in_features**-0.5)
        elif isinstance(m, _BatchNorm):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if isinstance(m, (nn.Conv2d, nn.Linear, _BatchNorm)):
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """Convolution with 'same' padding (halving the size when ``stride`` is 2)."""
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias)


def conv_bn_lrelu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        conv(cin, cout, kernel, stride), nn.BatchNorm2d(cout), nn.LeakyReLU(LRELU_SLOPE)
    )


def upsample(x: Tensor) -> Tensor:
    """Nearest-neighbour x2: (B, C, s, s) -> (B, C, 2s, 2s)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


class GeneMapping(nn.Module):
    """phi(g): two fully connected layers, (B, n_genes) -> (B, code_dim).

    Two linear layers, as the paper chooses "for better interpretability of gene encoding".
    ``dropout``: in training, each input gene is zeroed with this probability (and the others
    scaled by 1 / (1 - p)), so no single gene carries a donor's code: thousands of genes
    against about a hundred donors otherwise let the mapping tell donors apart by any of them.
    Evaluation (``eval()``) reads every gene.
    """

    def __init__(self, n_genes: int, hidden: int, code_dim: int, dropout: float = 0.0):
        super().__init__()
        if min(n_genes, hidden, code_dim) < 1:
            raise ValueError(
                f"gene mapping sizes must be >= 1, got n_genes={n_genes}, hidden={hidden}, "
                f"code_dim={code_dim}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"gene dropout must be in [0, 1), got {dropout}")
        self.n_genes = n_genes
        self.dropout = nn.Dropout(dropout)
        self.fc1 = nn.Linear(n_genes, hidden)
        self.fc2 = nn.Linear(hidden, code_dim)

    def forward(self, genes: Tensor) -> Tensor:
        check_shape(genes, (None, self.n_genes), "genes")
        return self.fc2(F.leaky_relu(self.fc1(self.dropout(genes)), LRELU_SLOPE))


class Encoder(nn.Module):
    """Convolutional image encoder keeping the features of every level.

    (B, in_channels, S, S) -> ``{S: (B, c_S, S, S), S/2: ..., 4: (B, c_4, 4, 4)}`` with the
    channels of :func:`channel_schedule`; a stem convolution then one stride-2 conv-BN-LReLU per
    level.
    """

    def __init__(self, image_size: int, width: int, in_channels: int = 1):
        super().__init__()
        self.image_size = image_size
        self.in_channels = in_channels
        self.channels = channel_schedule(image_size, width)
        sizes = list(self.channels)
        self.stem = conv_bn_lrelu(in_channels, self.channels[image_size])
        self.down = nn.ModuleList(
            conv_bn_lrelu(self.channels[a], self.channels[b], stride=2)
            for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        check_shape(x, (None, self.in_channels, self.image_size, self.image_size), "encoder input")
        x = self.stem(x)
        feats = {self.image_size: x}
        for block in self.down:
            x = block(x)
            feats[x.shape[-1]] = x
        return feats


class AdaIN(nn.Module):
    """Adaptive instance normalisation (Karras et al. 2019).

    ``out = scale(w) * (x - mean_hw(x)) / std_hw(x) + bias(w)``, per sample and channel, with
    ``(scale, bias)`` an affine map of the style ``w``; ``scale = 1 + affine`` so an untrained
    block starts as plain instance normalisation. x (B, C, H, W), w (B, style_dim). With a
    ``region`` r (B, 1, H, W), mean and variance are weighted by r: ``mean = sum(r x) / sum(r)``,
    ``var = sum(r (x - mean)^2) / sum(r)``, so the region gets the style's mean and spread.
    """

    def __init__(self, channels: int, style_dim: int, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.style_dim = style_dim
        self.eps = eps
        self.affine = nn.Linear(style_dim, 2 * channels)

    def style(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """Per-channel (scale, bias), each (B, C)."""
        check_shape(w, (None, self.style_dim), "style w")
        gamma, beta = self.affine(w).chunk(2, dim=1)
        return 1.0 + gamma, beta

    def forward(self, x: Tensor, w: Tensor, region: Tensor | None = None) -> Tensor:
        """``region`` (B, 1, H, W) >= 0, optional: take the mean and variance over the plane
        weighted by it (the statistics of the region it marks), not over the whole plane."""
        check_shape(x, (None, self.channels, None, None), "AdaIN input")
        scale, bias = self.style(w)
        xf = x.float()
        if region is None:
            var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
        else:
            check_shape(region, (x.shape[0], 1, x.shape[2], x.shape[3]), "AdaIN region")
            r = region.float()
            total = r.sum(dim=(2, 3), keepdim=True) + self.eps
            mean = (r * xf).sum(dim=(2, 3), keepdim=True) / total
            var = (r * (xf - mean) ** 2).sum(dim=(2, 3), keepdim=True) / total
        normed = ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        return normed * scale[:, :, None, None].to(x.dtype) + bias[:, :, None, None].to(x.dtype)


def doubling_body(
    in_channels: int, channels: int, kernel2: int = 1, final_norm: bool = True
) -> nn.Sequential:
    """conv-BN-LReLU-conv-BN, ``(B, in_channels, s, s) -> (B, 2 * channels, s, s)``: the two
    convolution + batch-norm layers that double the channels before the split into a weight map
    (or switch) and object features, shared by the fusion block and MC-GAN's synthesis block.
    ``final_norm=False`` leaves the last batch norm to the caller (per half)."""
    layers = [
        conv(in_channels, channels),
        nn.BatchNorm2d(channels),
        nn.LeakyReLU(LRELU_SLOPE),
        conv(channels, 2 * channels, kernel=kernel2),
    ]
    if final_norm:
        layers.append(nn.BatchNorm2d(2 * channels))
    return nn.Sequential(*layers)


WEIGHT_MAPS = ("gate", "paper")
ADAIN_INPUTS = ("weighted", "object", "gated")


class FusionBlock(nn.Module):
    """The paper's fusion block (Fig. 1b) at one resolution.

    ``prev`` (B, in_channels, s, s): synthesis features of the previous level, already upsampled;
    ``background`` (B, channels, s, s): the background encoder's features at this level;
    ``w`` (B, style_dim): the style (gene code and noise).

    conv-BN-LReLU-conv-BN turns ``prev`` into ``2 * channels`` maps (the channel number doubles);
    the first half becomes the weight map ``a`` (B, 1, s, s), the second half the object
    features ``o``. Then

        out = a * AdaIN(x, w) + (1 - a) * background,   x = o or a * o ("gated")

    (with x = o, AdaIN's statistics are weighted by ``a`` ("weighted") or taken over the whole
    plane ("object")),

    so ``a = 0`` returns the background features exactly. ``weight_map`` says how the first half
    becomes ``a``:

    * ``"paper"``: ``sigmoid(mean_c(first half))``, literally the batch-normalised half. Its
      logit is pinned near zero by the batch norm (every batch has mean 0 per channel), so the
      map starts at 0.5 everywhere and the optimiser barely moves it: every pixel passes half
      through the gene-styled path and the background is repainted.
    * ``"gate"``: ``sigmoid(conv1x1(first half) + b)``, a learnt projection with no batch norm
      after it and its bias ``b`` starting at ``gate_bias`` (-2: a = 0.12), on the background
      side, so the block starts by passing the background and opens where it pays.

    ``adain_input``: ``"gated"`` normalises ``a * o`` as the paper writes ("passing mainly
    nodule features to be normalised by gene code"); its statistics then scale with the area the
    map opens (a small nodule's features are amplified like 1 / sqrt(area), coupling intensity
    to size). ``"object"`` normalises ``o`` itself over the whole plane and gates once, after
    the style. ``"weighted"`` normalises ``o`` with its mean and variance weighted by ``a``
    (the statistics of the region the map opens, whatever its area) and gates once: the style's
    bias and scale become the nodule's own mean and spread. The second convolution is 1 x 1 (a
    per-pixel split into map and object): the 3 x 3 first convolution already mixes space.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        style_dim: int,
        kernel2: int = 1,
        weight_map: str = "gate",
        adain_input: str = "weighted",
        gate_bias: float = -2.0,
    ):
        super().__init__()
        if weight_map not in WEIGHT_MAPS:
            raise ValueError(f"weight_map must be one of {WEIGHT_MAPS}, got {weight_map!r}")
        if adain_input not in ADAIN_INPUTS:
            raise ValueError(f"adain_input must be one of {ADAIN_INPUTS}, got {adain_input!r}")
        self.in_channels = in_channels
        self.channels = channels
        self.weight_map = weight_map
        self.adain_input = adain_input
        self.body = doubling_body(in_channels, channels, kernel2, final_norm=False)
        # the second batch norm, per half; AdaIN of the object itself ("weighted", "object")
        # subsumes its half (instance statistics replace the batch's, so its scale and shift
        # would get no gradient but numerical noise), hence none there
        self.map_norm = nn.BatchNorm2d(channels)
        self.object_norm = nn.BatchNorm2d(channels) if adain_input == "gated" else None
        self.adain = AdaIN(channels, style_dim)
        self.gate: nn.Conv2d | None = None
        if weight_map == "gate":
            self.gate = nn.Conv2d(channels, 1, 1, bias=True)
            self.gate_bias = float(gate_bias)

    def reset_gate(self) -> None:
        """Put the gate's bias back on the background side (after a generic initialisation)."""
        if self.gate is not None:
            nn.init.normal_(self.gate.weight, 0.0, 0.02)
            nn.init.constant_(self.gate.bias, self.gate_bias)

    def split(self, prev: Tensor) -> tuple[Tensor, Tensor]:
        """(weight map (B, 1, s, s) in [0, 1], object features (B, C, s, s))."""
        check_shape(prev, (None, self.in_channels, None, None), "fusion input")
        h = self.body(prev)
        weight_half = self.map_norm(h[:, : self.channels])
        obj = h[:, self.channels :]
        if self.object_norm is not None:
            obj = self.object_norm(obj)
        if self.gate is None:
            return torch.sigmoid(weight_half.mean(dim=1, keepdim=True)), obj
        return torch.sigmoid(self.gate(weight_half).float()).to(obj.dtype), obj

    def forward(
        self, prev: Tensor, background: Tensor, w: Tensor, weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """(fused features (B, C, s, s), weight map (B, 1, s, s)).

        ``weight`` replaces the learnt map (ablations and tests); shape (B, 1, s, s).
        """
        s = prev.shape[-1]
        check_shape(background, (prev.shape[0], self.channels, s, s), "fusion background")
        a, obj = self.split(prev)
        if weight is not None:
            check_shape(weight, (prev.shape[0], 1, s, s), "fusion weight")
            a = weight.to(obj.dtype)
        if self.adain_input == "gated":
            styled = self.adain(a * obj, w)
        else:
            styled = self.adain(obj, w, region=a if self.adain_input == "weighted" else None)
        return a * styled + (1.0 - a) * background, a


class DownBlock(nn.Module):
    """Stride-2 conv (3 x 3) -> GroupedBatchNorm (optional) -> LReLU; (N, cin, s, s) -> (N, cout,
    s/2, s/2)."""

    def __init__(self, cin: int, cout: int, norm: bool = True):
        super().__init__()
        self.conv = conv(cin, cout, stride=2, bias=not norm)
        self.norm = GroupedBatchNorm(cout) if norm else None

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x, groups)
        return F.leaky_relu(x, LRELU_SLOPE)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
