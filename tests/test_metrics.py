"""Image metrics: ideal values on identical images, monotonic in corruption, reset."""

from __future__ import annotations

import importlib.util

import kornia
import pytest
import torch

from denoised_weights.core.errors import DnwError, UnknownNameError
from denoised_weights.plugins.image_translation import metrics as M
from denoised_weights.plugins.image_translation.photos import sample_crops

# FID/KID run their network at 96 px here for speed (224 is the default)
FAST = {"image_size": 96}


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return sample_crops(32, 64, split="eval", seed=0)


def _noisy(x: torch.Tensor, sigma: float) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    return (x + sigma * noise).clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return kornia.filters.gaussian_blur2d(x, (15, 15), (sigma, sigma))


def _score(metric, pred, target) -> float:
    metric.reset()
    metric.update(pred, target)
    return metric.compute()


def _worse(metric, value: float, than: float) -> bool:
    return value < than if metric.higher_is_better else value > than


def test_build_metrics_names() -> None:
    metrics = M.build_metrics(M.METRIC_NAMES)
    assert list(metrics) == list(M.METRIC_NAMES)
    for name, metric in metrics.items():
        assert metric.name == name and metric.label
        assert metric.higher_is_better == M.HIGHER_IS_BETTER[name]
    assert metrics["fid"].label == "FID (EfficientNet-Lite0)"
    with pytest.raises(UnknownNameError, match="known metrics"):
        M.build_metrics(["psnr", "nope"])


@pytest.mark.parametrize("name", ["l1", "psnr", "ssim", "lpips"])
def test_paired_metrics(name: str, images: torch.Tensor) -> None:
    x = images[:8]
    metric = M.build_metrics([name])[name]
    ideal = {"l1": 0.0, "psnr": M.PSNR_MAX_DB, "ssim": 1.0, "lpips": 0.0}[name]
    assert _score(metric, x, x) == pytest.approx(ideal, abs=1e-4)
    for corrupt, strengths in ((_noisy, (0.05, 0.1, 0.2)), (_blur, (0.7, 1.4, 2.8))):
        values = [_score(metric, corrupt(x, s), x) for s in strengths]
        assert _worse(metric, values[0], ideal)
        assert _worse(metric, values[1], values[0]) and _worse(metric, values[2], values[1])
    # accumulating two batches equals one batch of both; reset forgets
    metric.reset()
    metric.update(_noisy(x[:4], 0.1), x[:4])
    metric.update(_noisy(x, 0.1)[4:], x[4:])
    assert metric.compute() == pytest.approx(_score(metric, _noisy(x, 0.1), x), rel=1e-4)
    metric.reset()
    with pytest.raises(DnwError):
        metric.compute()


def test_lpips_plausible(images: torch.Tensor) -> None:
    net = M.load_lpips_alex()
    with torch.no_grad():
        d = net(images[:8], _noisy(images[:8], 0.1))
        assert d.shape == (8,) and 0.1 < d.mean() < 0.7
        assert torch.allclose(d, net(_noisy(images[:8], 0.1), images[:8]))  # symmetric


@pytest.mark.parametrize("name", ["fid", "kid"])
def test_distribution_metrics(name: str, images: torch.Tensor) -> None:
    metric = M.build_metrics([name], **FAST)[name]
    same = _score(metric, images, images)
    mild, strong = (_score(metric, _blur(images, s), images) for s in (1.0, 2.0))
    assert same < mild < strong
    if name == "fid":
        assert abs(same) < 1e-3 * strong
    metric.reset()
    metric.update(images[:1], images[:1])
    with pytest.raises(DnwError, match="at least 2"):
        metric.compute()


def test_efficientnet_features_default_size(images: torch.Tensor) -> None:
    net = M.feature_extractor()
    with torch.no_grad():
        f = net(images[:2])
    assert f.shape == (2, 1280) and torch.isfinite(f).all() and f.std() > 0
    with pytest.raises(DnwError, match="multiple of 32"):
        M.EfficientNetLite0Features(100)


@pytest.mark.skipif(
    importlib.util.find_spec("torch_fidelity") is not None, reason="torch-fidelity installed"
)
def test_inception_needs_torch_fidelity(tmp_path, images: torch.Tensor) -> None:
    weights = tmp_path / "inception.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    fid = M.build_metrics(["fid"], inception_weights=weights)["fid"]
    assert fid.label == "FID (InceptionV3)"
    with pytest.raises(DnwError, match="torch-fidelity"):
        fid.update(images[:2], images[:2])
