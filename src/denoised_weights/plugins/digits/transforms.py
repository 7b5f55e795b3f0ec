"""Transformations of digit images: ``[n, 1, H, W]`` float32 in [0, 1], ink bright on black.

Every transformation is a *family* with one continuous parameter (``rotate.degrees``,
``blur.sigma``, ...). Geometric families (scale, rotate, shear, shifts) are affine maps; the
consecutive ones of a concept are multiplied into one matrix and resampled once, so a
composition blurs no more than a single step. Pixel units refer to the 16x16 working size.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Phrases = tuple[str, str, str]


@dataclass(frozen=True)
class Family:
    """One kind of transformation: its parameter, how to phrase a value, and its effect."""

    name: str
    param: str
    #: parameter value that does nothing (or destroys the image): never sampled around
    neutral: float
    #: decimals of a sampled value
    decimals: int
    #: value -> (participle, noun phrase, imperative), each naming the value
    describe: Callable[[float], Phrases]
    #: 3x3 forward matrix (normalised coordinates, y down) for affine families
    matrix: Callable[[float], torch.Tensor] | None = None
    #: ``(images, value, generator) -> images`` for the others
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor] | None = None

    @property
    def key(self) -> str:
        """The parameter's name in :attr:`Concept.params` (``"rotate.degrees"``)."""
        return f"{self.name}.{self.param}"


def fmt(value: float) -> str:
    """A value as written in prompts and ids (``30``, ``0.15``, ``1.25``)."""
    return f"{value:g}"


# -- affine families ---------------------------------------------------------------------------
def _affine(
    a: float, b: float, c: float, d: float, tx: float = 0.0, ty: float = 0.0
) -> torch.Tensor:
    return torch.tensor([[a, b, tx], [c, d, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _rotation(degrees: float) -> torch.Tensor:
    """Clockwise on screen for positive degrees (y points down)."""
    t = math.radians(degrees)
    return _affine(math.cos(t), -math.sin(t), math.sin(t), math.cos(t))


def _shear(k: float) -> torch.Tensor:
    """Horizontal shear; positive leans the top to the right."""
    return _affine(1.0, -k, 0.0, 1.0)


def _scale(s: float) -> torch.Tensor:
    return _affine(s, 0.0, 0.0, s)


def _shift_x(pixels: float) -> torch.Tensor:
    return _affine(1.0, 0.0, 0.0, 1.0, tx=2 * pixels / 16)


def _shift_y(pixels: float) -> torch.Tensor:
    return _affine(1.0, 0.0, 0.0, 1.0, ty=2 * pixels / 16)


def warp(images: torch.Tensor, forward: torch.Tensor) -> torch.Tensor:
    """Resample ``images`` under the forward affine map ``forward`` (3x3, normalised coords)."""
    theta = torch.linalg.inv(forward)[:2].to(images.dtype)
    grid = F.affine_grid(theta.expand(len(images), 2, 3), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# -- pixel families ----------------------------------------------------------------------------
def _morph(images: torch.Tensor, amount: float, erode: bool) -> torch.Tensor:
    """Grey-level dilation (erosion) by ``amount`` pixels: whole 3x3 steps, the fraction blended."""

    def step(x: torch.Tensor) -> torch.Tensor:
        return -F.max_pool2d(-x, 3, 1, 1) if erode else F.max_pool2d(x, 3, 1, 1)

    whole, frac = math.floor(amount), amount - math.floor(amount)
    out = images
    for _ in range(whole):
        out = step(out)
    return out if frac == 0 else (1 - frac) * out + frac * step(out)


def _thicken(images: torch.Tensor, pixels: float, _: torch.Generator) -> torch.Tensor:
    return _morph(images, pixels, erode=False)


def _thin(images: torch.Tensor, pixels: float, _: torch.Generator) -> torch.Tensor:
    return _morph(images, pixels, erode=True)


def _blur(images: torch.Tensor, sigma: float, _: torch.Generator) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(images.dtype)
    images = F.conv2d(images, k.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(images, k.view(1, 1, -1, 1), padding=(radius, 0))


def _invert(images: torch.Tensor, strength: float, _: torch.Generator) -> torch.Tensor:
    return (1 - strength) * images + strength * (1 - images)


def _noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    return images + std * torch.randn(images.shape, generator=generator, dtype=images.dtype)


# -- phrasing ----------------------------------------------------------------------------------
def _signed(value: float, positive: str, negative: str) -> tuple[str, str]:
    return fmt(abs(value)), positive if value >= 0 else negative


def _pixels(v: float) -> str:
    return f"{fmt(v)} pixel" if v == 1 else f"{fmt(v)} pixels"


def _say_rotate(v: float) -> Phrases:
    a, way = _signed(v, "clockwise", "counter-clockwise")
    return (
        f"rotated {a} degrees {way}",
        f"a rotation of {a}° {way}",
        f"turn the digit {a} degrees {way}",
    )


def _say_shear(v: float) -> Phrases:
    a, way = _signed(v, "right", "left")
    return (
        f"sheared by {a} to the {way}",
        f"a {way}ward slant of shear factor {a}",
        f"shear the digit by {a} so it leans {way}",
    )


def _say_scale(v: float) -> Phrases:
    a = fmt(v)
    verb = "enlarged" if v > 1 else "shrunk"
    return (
        f"{verb} to {a} times their size",
        f"a zoom of {a}x",
        f"scale the digit by a factor of {a}",
    )


def _say_shift(axis: str) -> Callable[[float], Phrases]:
    positive, negative = ("right", "left") if axis == "x" else ("down", "up")

    def say(v: float) -> Phrases:
        _, way = _signed(v, positive, negative)
        return (
            f"shifted {_pixels(abs(v))} {way}",
            f"an offset of {_pixels(abs(v))} {way}",
            f"move the digit {_pixels(abs(v))} {way}",
        )

    return say


def _say_thicken(v: float) -> Phrases:
    return (
        f"with strokes thickened by {_pixels(v)}",
        f"bolder strokes dilated by {_pixels(v)}",
        f"thicken the pen strokes by {_pixels(v)}",
    )


def _say_thin(v: float) -> Phrases:
    return (
        f"with strokes thinned by {_pixels(v)}",
        f"thinner strokes eroded by {_pixels(v)}",
        f"thin the pen strokes by {_pixels(v)}",
    )


def _say_blur(v: float) -> Phrases:
    return (
        f"blurred with sigma {fmt(v)}",
        f"a Gaussian blur of radius {_pixels(v)}",
        f"blur the digit with a sigma {fmt(v)} Gaussian",
    )


def _say_invert(v: float) -> Phrases:
    return (
        f"inverted with strength {fmt(v)}",
        f"a colour inversion of strength {fmt(v)}",
        f"invert the brightness by {fmt(v)}",
    )


def _say_noise(v: float) -> Phrases:
    return (
        f"with Gaussian noise of std {fmt(v)}",
        f"additive pixel noise at level {fmt(v)}",
        f"add random noise with standard deviation {fmt(v)}",
    )


#: every family, in the order a composition applies them (geometry, strokes, optics, tone, noise)
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("scale", "factor", 1.0, 3, _say_scale, matrix=_scale),
        Family("rotate", "degrees", 0.0, 1, _say_rotate, matrix=_rotation),
        Family("shear", "factor", 0.0, 3, _say_shear, matrix=_shear),
        Family("shift-x", "pixels", 0.0, 2, _say_shift("x"), matrix=_shift_x),
        Family("shift-y", "pixels", 0.0, 2, _say_shift("y"), matrix=_shift_y),
        Family("thicken", "pixels", 0.0, 2, _say_thicken, apply=_thicken),
        Family("thin", "pixels", 0.0, 2, _say_thin, apply=_thin),
        Family("blur", "sigma", 0.0, 2, _say_blur, apply=_blur),
        Family("invert", "strength", 0.5, 3, _say_invert, apply=_invert),
        Family("noise", "std", 0.0, 3, _say_noise, apply=_noise),
    )
}
ORDER: tuple[str, ...] = tuple(FAMILIES)


def noise_generator(*parts: object) -> torch.Generator:
    """A generator seeded by a SHA-256 of ``parts`` (the noise of one data set)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return torch.Generator().manual_seed(int(digest[:15], 16))


def apply_steps(
    images: torch.Tensor, steps: Sequence[tuple[str, float]], generator: torch.Generator
) -> torch.Tensor:
    """Apply ``(family, value)`` steps in order; consecutive affine steps resample once."""
    out, pending = images, None
    for name, value in steps:
        family = FAMILIES[name]
        if family.matrix is not None:
            m = family.matrix(value)
            pending = m if pending is None else m @ pending
            continue
        if pending is not None:
            out, pending = warp(out, pending), None
        out = family.apply(out, value, generator)  # type: ignore[misc]
    if pending is not None:
        out = warp(out, pending)
    return out.clamp(0.0, 1.0)
