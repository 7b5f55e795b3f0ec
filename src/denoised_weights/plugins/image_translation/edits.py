"""Primitive photo edits on image batches, the building blocks of concepts.

Every primitive maps a float32 batch ``[B, 3, H, W]`` in ``[0, 1]`` to a batch of the same shape,
clamped to ``[0, 1]``. Each has one or two continuous parameters with a documented valid range
(``Primitive.params``); integer-like parameters (bits, block sizes, palette indices) are rounded.
All edits are deterministic and built on kornia (colour spaces, enhance, filters, geometry) and
torch pooling; none draws random numbers. Images should be at least 16x16 pixels.

``PRIMITIVES`` maps each name to its :class:`Primitive`; ``Primitive.describe(**params)`` gives
three short noun phrases naming the edit at those values (used to write concept prompts).
Each primitive also has a ``group`` (``tone``, ``style``, ``colour``, ``optics``): compositions
apply the groups in that order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

import kornia
import torch
import torch.nn.functional as F

Images = torch.Tensor
Phrases = tuple[str, str, str]

#: order in which compositions apply primitive groups
GROUPS: tuple[str, ...] = ("tone", "style", "colour", "optics")

#: names for hues (degrees) used in prompts
HUE_NAMES: dict[int, str] = {
    0: "red",
    30: "orange",
    45: "amber",
    60: "yellow",
    90: "lime",
    120: "green",
    150: "jade",
    180: "cyan",
    200: "sky blue",
    220: "azure",
    240: "blue",
    260: "indigo",
    280: "purple",
    300: "violet",
    320: "magenta",
    340: "rose",
}

#: palettes for the ``false_colour`` primitive, indexed by its ``palette`` parameter
PALETTES: tuple[tuple[str, str], ...] = (
    ("viridis", "viridis"),
    ("plasma", "plasma"),
    ("turbo", "rainbow turbo"),
    ("hot", "thermal-camera"),
    ("ocean", "deep-ocean"),
    ("bone", "blue-grey bone"),
)

#: channel swaps for the ``channel_swap`` primitive, indexed by its ``order`` parameter (cyclic
#: rotations are left out: they equal 120-degree hue rotations)
CHANNEL_ORDERS: tuple[tuple[tuple[int, int, int], str], ...] = (
    ((1, 0, 2), "red-green swap"),
    ((2, 1, 0), "red-blue swap"),
    ((0, 2, 1), "green-blue swap"),
)


@dataclass(frozen=True)
class Primitive:
    """One parametrised edit.

    ``fn(images, **params)`` does the work; ``params`` maps each parameter name to its valid
    ``(low, high)`` range; ``describe(**params)`` names the edit at those values.
    """

    name: str
    fn: Callable[..., Images]
    params: dict[str, tuple[float, float]]
    describe: Callable[..., Phrases]
    group: str
    doc: str = ""

    def __call__(self, images: Images, **params: float) -> Images:
        """Check ``images`` and ``params`` against the ranges, then apply the edit."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(
                f"{self.name}: expected float images [B, 3, H, W], got {tuple(images.shape)}"
            )
        if set(params) != set(self.params):
            raise ValueError(
                f"{self.name}: expected parameters {sorted(self.params)}, got {sorted(params)}"
            )
        for key, value in params.items():
            low, high = self.params[key]
            if not low <= value <= high:
                raise ValueError(f"{self.name}: {key}={value} outside [{low}, {high}]")
        return self.fn(images, **params)


def _clamped(fn: Callable[..., Images]) -> Callable[..., Images]:
    @wraps(fn)
    def wrapper(images: Images, **params: float) -> Images:
        return fn(images, **params).clamp(0.0, 1.0).contiguous()

    return wrapper


# ---------------------------------------------------------------------------------------------
# helpers


def _gray(images: Images) -> Images:
    return kornia.color.rgb_to_grayscale(images)


def _mix(images: Images, edited: Images, strength: float) -> Images:
    return torch.lerp(images, edited.expand_as(images), float(strength))


def _hue_rgb(
    hue_deg: float, sat: float = 1.0, val: float = 1.0, like: Images | None = None
) -> Images:
    hsv = torch.tensor([math.radians(hue_deg % 360.0), sat, val], dtype=torch.float32)
    rgb = kornia.color.hsv_to_rgb(hsv.view(1, 3, 1, 1))
    return rgb if like is None else rgb.to(like)


def _odd(size: float) -> int:
    return 2 * round((size - 1) / 2) + 1


def _gauss_kernel(images: Images, sigma: float) -> int:
    limit = 2 * (min(images.shape[-2:]) - 1) - 1  # reflect padding needs pad < size
    return max(3, min(_odd(2 * math.ceil(3 * sigma) + 1), _odd(limit)))


def _blur(images: Images, sigma: float) -> Images:
    k = _gauss_kernel(images, sigma)
    return kornia.filters.gaussian_blur2d(images, (k, k), (float(sigma), float(sigma)))


def _block_mean(images: Images, block: int) -> Images:
    """Mean over ``block``-sized cells, repeated back to full resolution (edge cells partial)."""
    h, w = images.shape[-2:]
    pooled = F.avg_pool2d(images, block, stride=block, ceil_mode=True)
    up = pooled.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return up[..., :h, :w]


def _word(value: float, low: float, high: float, words: tuple[str, ...]) -> str:
    """The word for ``value``'s position in ``[low, high]`` (equal-width bins)."""
    t = (value - low) / (high - low)
    return words[max(0, min(len(words) - 1, int(t * len(words))))]


def _plural(value: float, unit: str) -> str:
    return f"{value:g} {unit}" if value == 1 else f"{value:g} {unit}s"


def _hue_name(hue: float) -> str:
    return HUE_NAMES.get(round(hue) % 360, f"{hue:g}-degree-hue")


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def _num(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------
# tone


@_clamped
def gamma(images: Images, gamma: float) -> Images:
    """Power curve ``x ** gamma``: below 1 lifts midtones, above 1 darkens them. Range 0.3..3."""
    return kornia.enhance.adjust_gamma(images, float(gamma))


def _describe_gamma(gamma: float) -> Phrases:
    g = _num(gamma)
    if gamma < 1:
        w = _word(1 - gamma, 0, 0.7, ("slightly", "noticeably", "strongly", "heavily"))
        return (
            f"{w} brightened midtones at gamma {g}",
            f"a lifted gamma curve of {g}",
            f"midtones opened up with gamma {g}",
        )
    w = _word(gamma - 1, 0, 2, ("slightly", "noticeably", "strongly", "heavily"))
    return (
        f"{w} darkened midtones at gamma {g}",
        f"a deepened gamma curve of {g}",
        f"midtones pushed down with gamma {g}",
    )


@_clamped
def contrast(images: Images, factor: float) -> Images:
    """Scale contrast around the image mean: below 1 flattens, above 1 punches. Range 0.3..2.5."""
    return kornia.enhance.adjust_contrast_with_mean_subtraction(images, float(factor))


def _describe_contrast(factor: float) -> Phrases:
    f = _num(factor)
    if factor < 1:
        w = _word(1 - factor, 0, 0.7, ("slightly", "noticeably", "strongly", "extremely"))
        return (
            f"{w} reduced contrast at {f}x",
            f"a flat, washed-out look with contrast {f}",
            f"contrast lowered to {f} times",
        )
    w = _word(factor - 1, 0, 1.5, ("slightly", "noticeably", "strongly", "extremely"))
    return (
        f"{w} boosted contrast at {f}x",
        f"a punchy, high-contrast look with contrast {f}",
        f"contrast raised to {f} times",
    )


@_clamped
def brightness(images: Images, delta: float) -> Images:
    """Add ``delta`` to every pixel. Range -0.5..0.5."""
    return kornia.enhance.adjust_brightness(images, float(delta))


def _describe_brightness(delta: float) -> Phrases:
    p = _pct(abs(delta))
    w = _word(abs(delta), 0, 0.5, ("slight", "noticeable", "strong", "big"))
    if delta > 0:
        return (
            f"a {w} {p} boost in brightness",
            f"brightness raised by {p}",
            f"everything lightened {p}",
        )
    return (f"a {w} {p} drop in brightness", f"brightness lowered by {p}", f"everything dimmed {p}")


@_clamped
def exposure(images: Images, stops: float) -> Images:
    """Scale linear-light intensities by ``2 ** stops`` (camera exposure). Range -2..2."""
    linear = kornia.color.rgb_to_linear_rgb(images) * (2.0 ** float(stops))
    return kornia.color.linear_rgb_to_rgb(linear.clamp(0.0, 1.0))


def _describe_exposure(stops: float) -> Phrases:
    n = _num(abs(stops))
    unit = "stop" if abs(stops) == 1 else "stops"
    way = "over" if stops > 0 else "under"
    w = _word(abs(stops), 0, 2, ("slightly", "clearly", "badly", "severely"))
    sign = "+" if stops > 0 else "-"
    return (
        f"a {w} {way}exposed shot at {sign}{n} EV",
        f"exposure {'raised' if stops > 0 else 'cut'} by {n} {unit}",
        f"{n} {unit} of {way}exposure",
    )


@_clamped
def faded_blacks(images: Images, amount: float) -> Images:
    """Lift the black point to ``amount`` (matte, faded-film look). Range 0..0.5."""
    return kornia.enhance.add_weighted(
        images, 1.0 - float(amount), torch.ones_like(images), float(amount), 0.0
    )


def _describe_faded_blacks(amount: float) -> Phrases:
    p = _pct(amount)
    w = _word(amount, 0, 0.5, ("slightly", "gently", "strongly", "heavily"))
    return (
        f"{w} faded blacks lifted to {p}",
        f"a matte faded-film look with {p} lifted shadows",
        f"washed-out blacks raised {p}",
    )


@_clamped
def local_contrast(images: Images, clip_limit: float) -> Images:
    """CLAHE on Lab lightness; ``clip_limit`` sets how strong. Range 1..10."""
    lab = kornia.color.rgb_to_lab(images)
    light = kornia.enhance.equalize_clahe(
        (lab[:, :1] / 100.0).clamp(0, 1), clip_limit=float(clip_limit), grid_size=(4, 4)
    )
    return kornia.color.lab_to_rgb(torch.cat([light * 100.0, lab[:, 1:]], dim=1))


def _describe_local_contrast(clip_limit: float) -> Phrases:
    c = _num(clip_limit)
    w = _word(clip_limit, 1, 10, ("subtle", "moderate", "strong", "extreme"))
    return (
        f"{w} local contrast at clip limit {c}",
        f"adaptive histogram equalisation at clip {c}",
        f"an HDR-like detail boost of strength {c}",
    )


# ---------------------------------------------------------------------------------------------
# style


@_clamped
def posterize(images: Images, bits: float) -> Images:
    """Keep ``bits`` bits per channel (2**bits levels). Range 1..7, rounded."""
    return kornia.enhance.posterize(images, round(bits))


def _describe_posterize(bits: float) -> Phrases:
    b = round(bits)
    w = _word(7 - b, 0, 6, ("slight", "moderate", "strong", "extreme"))
    return (
        f"{w} posterisation to {_plural(b, 'bit')}",
        f"colours reduced to {2**b} levels per channel",
        f"a flat poster look with {b}-bit colour",
    )


@_clamped
def solarize(images: Images, threshold: float) -> Images:
    """Invert pixels brighter than ``threshold``. Range 0.1..0.95."""
    return kornia.enhance.solarize(images, float(threshold))


def _describe_solarize(threshold: float) -> Phrases:
    p = _pct(threshold)
    w = _word(1 - threshold, 0.05, 0.9, ("slight", "partial", "strong", "heavy"))
    return (
        f"{w} solarisation above {p}",
        f"a darkroom Sabattier effect from {p} brightness",
        f"tones over {p} inverted",
    )


@_clamped
def threshold(images: Images, level: float) -> Images:
    """Hard black-and-white: luminance at or above ``level`` becomes white. Range 0.2..0.8."""
    return (_gray(images) >= float(level)).to(images.dtype).expand_as(images)


def _describe_threshold(level: float) -> Phrases:
    p = _pct(level)
    w = _word(level, 0.2, 0.8, ("very light", "light", "balanced", "dark", "very dark"))
    return (
        f"a {w} black-and-white threshold at {p}",
        f"hard two-tone black and white cut at {p}",
        f"stark ink-like black and white from {p} brightness",
    )


@_clamped
def emboss(images: Images, strength: float) -> Images:
    """Grey relief from Sobel gradients (light from the top left), mixed in. Range 0..1."""
    grad = kornia.filters.spatial_gradient(_gray(images), mode="sobel", normalized=True)
    relief = 0.5 - 3.0 * (grad[:, :, 0] + grad[:, :, 1])
    return _mix(images, relief, strength)


def _describe_emboss(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "light", "moderate", "strong", "full"))
    return (
        f"a {w} emboss effect at {p}",
        f"a raised metal relief look at {p} strength",
        f"{p} embossed grey relief",
    )


@_clamped
def sketch(images: Images, softness: float) -> Images:
    """Pencil sketch by colour-dodging grey with its blurred negative; ``softness`` is the blur
    sigma in pixels (broader strokes). Range 0.5..5."""
    gray = _gray(images)
    blurred_negative = _blur(1.0 - gray, softness)
    return (gray / (1.0 - blurred_negative + 1e-3)).clamp(0, 1).expand_as(images)


def _describe_sketch(softness: float) -> Phrases:
    s = _num(softness)
    w = _word(softness, 0.5, 5, ("fine", "medium", "soft", "broad"))
    return (
        f"a pencil sketch with {w} {s}-pixel strokes",
        f"a graphite-drawing look with stroke width {s}",
        f"hand-drawn pencil lines of softness {s}",
    )


@_clamped
def glowing_edges(images: Images, strength: float) -> Images:
    """Bright Sobel edges on black (per channel), mixed in. Range 0..1."""
    edges = kornia.filters.sobel(images) * 4.0
    return _mix(images, edges, strength)


def _describe_glowing_edges(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "subtle", "bright", "strong", "full"))
    return (
        f"{w} glowing neon edges at {p}",
        f"bright outlines on black mixed in at {p}",
        f"an edge-detection look at {p} strength",
    )


@_clamped
def cartoon(images: Images, levels: float) -> Images:
    """Bilateral smoothing, quantisation to ``levels`` values per channel and dark outlines.
    Range 2..10, rounded."""
    n = round(levels)
    smooth = kornia.filters.bilateral_blur(images, 5, 0.15, (2.0, 2.0))
    flat = torch.round(smooth * (n - 1)) / (n - 1)
    edges = kornia.filters.sobel(_gray(smooth))
    outline = ((edges - 0.04) * 25.0).clamp(0, 1)
    return flat * (1.0 - outline)


def _describe_cartoon(levels: float) -> Phrases:
    n = round(levels)
    w = _word(10 - n, 0, 8, ("detailed", "moderate", "bold", "very bold"))
    return (
        f"a {w} cartoon look with {n} tones per channel",
        f"a comic-book style with {n} colour levels and ink outlines",
        f"cel shading in {n} flat levels",
    )


@_clamped
def median(images: Images, radius: float) -> Images:
    """Median filter over a ``(2*radius+1)``-pixel square: smooths texture, keeps edges.
    Range 1..2, rounded (larger kernels are too slow on CPU)."""
    return kornia.filters.median_blur(images, 2 * round(radius) + 1)


def _describe_median(radius: float) -> Phrases:
    r = round(radius)
    k = 2 * r + 1
    w = "light" if r <= 1 else "strong"
    return (
        f"a {w} {k}x{k} median filter",
        f"texture smoothed away with a radius-{r} median",
        f"a waxy, denoised look of radius {r}",
    )


@_clamped
def oil_paint(images: Images, radius: float) -> Images:
    """Kuwahara filter: each pixel takes the mean of its least-varied quadrant, giving flat
    painterly strokes. Range 1..6, rounded."""
    r = round(radius)
    h, w = images.shape[-2:]
    padded = F.pad(images, (r, r, r, r), mode="reflect")
    mean = F.avg_pool2d(padded, r + 1, stride=1)
    var = (F.avg_pool2d(padded * padded, r + 1, stride=1) - mean * mean).sum(1, keepdim=True)
    offsets = ((0, 0), (0, r), (r, 0), (r, r))
    means = torch.stack([mean[..., dy : dy + h, dx : dx + w] for dy, dx in offsets])
    varis = torch.stack([var[..., dy : dy + h, dx : dx + w] for dy, dx in offsets])
    best = varis.argmin(0, keepdim=True).expand(1, *means.shape[1:])
    return means.gather(0, best)[0]


def _describe_oil_paint(radius: float) -> Phrases:
    r = round(radius)
    w = _word(r, 1, 6, ("fine", "medium", "broad", "heavy"))
    return (
        f"an oil painting with {w} radius-{r} strokes",
        f"a painterly Kuwahara filter of size {r}",
        f"impasto paint dabs {_plural(r, 'pixel')} wide",
    )


@_clamped
def halftone(images: Images, cell: float) -> Images:
    """Colour halftone: per-channel ink dots on a ``cell``-pixel grid whose area follows the
    cell's ink. Range 3..12, rounded."""
    c = round(cell)
    h, w = images.shape[-2:]
    ink = 1.0 - _block_mean(images, c)
    ys = (torch.arange(h, dtype=images.dtype) % c) + 0.5 - c / 2
    xs = (torch.arange(w, dtype=images.dtype) % c) + 0.5 - c / 2
    dist = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    radius = c * torch.sqrt(ink / math.pi)
    dots = (radius - dist + 0.5).clamp(0, 1)
    return 1.0 - dots


def _describe_halftone(cell: float) -> Phrases:
    c = round(cell)
    w = _word(c, 3, 12, ("fine", "medium", "coarse", "huge"))
    return (
        f"a halftone print with {w} {c}-pixel dots",
        f"newspaper-style colour dots on a {c}-pixel grid",
        f"a comic print dot screen of size {c}",
    )


@_clamped
def pixelate(images: Images, block: float) -> Images:
    """Average over ``block``-pixel squares (mosaic). Range 2..16, rounded."""
    return _block_mean(images, round(block))


def _describe_pixelate(block: float) -> Phrases:
    b = round(block)
    w = _word(b, 2, 16, ("slight", "moderate", "chunky", "heavy"))
    return (
        f"{w} pixelation into {b}-pixel blocks",
        f"a mosaic of {b}x{b} tiles",
        f"a retro pixel-art look with {b}-pixel squares",
    )


# ---------------------------------------------------------------------------------------------
# colour


@_clamped
def sepia(images: Images, strength: float) -> Images:
    """Sepia matrix, mixed in by ``strength``. Range 0..1."""
    toned = kornia.color.sepia(images, rescale=False)
    return _mix(images, toned, strength)


def _describe_sepia(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "light", "moderate", "strong", "full"))
    return (
        f"{w} sepia toning at {p}",
        f"an old brown-toned look at {p}",
        f"vintage sepia filtering at {p}",
    )


@_clamped
def grayscale(images: Images, strength: float) -> Images:
    """Mix towards luminance grey by ``strength``. Range 0..1."""
    return _mix(images, _gray(images), strength)


def _describe_grayscale(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0, 1, ("slightly", "partly", "half", "mostly", "fully"))
    return (
        f"colours {w} drained to grey at {p}",
        f"black-and-white conversion at {p}",
        f"{p} monochrome greyscale",
    )


@_clamped
def hue_rotate(images: Images, degrees: float) -> Images:
    """Rotate hue by ``degrees`` (positive: red towards yellow and green). Range -180..180."""
    return kornia.enhance.adjust_hue(images, math.radians(degrees))


def _describe_hue_rotate(degrees: float) -> Phrases:
    d = _num(degrees)
    a = _num(abs(degrees))
    way = "forward" if degrees > 0 else "backward"
    w = _word(abs(degrees), 0, 180, ("slight", "clear", "strong", "drastic"))
    return (
        f"hue rotated by {d} degrees",
        f"colours shifted {a} degrees {way} around the colour wheel",
        f"a {w} {d}-degree hue shift",
    )


@_clamped
def saturation(images: Images, factor: float) -> Images:
    """Scale HSV saturation by ``factor``: 0 is grey, above 1 is more vivid. Range 0..3."""
    return kornia.enhance.adjust_saturation(images, float(factor))


def _describe_saturation(factor: float) -> Phrases:
    f = _num(factor)
    if factor < 1:
        w = _word(1 - factor, 0, 1, ("slightly", "noticeably", "strongly", "almost fully"))
        return (
            f"{w} desaturated colours at {f}x",
            f"muted colours with saturation {f}",
            f"colour intensity reduced to {f} times",
        )
    w = _word(factor - 1, 0, 2, ("slightly", "noticeably", "strongly", "extremely"))
    return (
        f"{w} oversaturated colours at {f}x",
        f"vivid colours with saturation {f}",
        f"colour intensity boosted to {f} times",
    )


@_clamped
def tint(images: Images, hue: float, strength: float) -> Images:
    """Push Lab chroma towards a colour of hue ``hue`` (degrees, 0..360) by ``strength`` (0..1)."""
    lab = kornia.color.rgb_to_lab(images)
    target = kornia.color.rgb_to_lab(_hue_rgb(hue, like=images))[:, 1:]
    direction = target / target.norm(dim=1, keepdim=True)
    ab = lab[:, 1:] + 60.0 * float(strength) * direction
    return kornia.color.lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))


def _describe_tint(hue: float, strength: float) -> Phrases:
    c = _hue_name(hue)
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "light", "moderate", "strong", "heavy"))
    return (
        f"a {w} {c} tint at {p}",
        f"a {c} colour cast of {p} strength",
        f"{c} colour filtering at {p}",
    )


@_clamped
def duotone(images: Images, shadow_hue: float, highlight_hue: float) -> Images:
    """Map luminance onto a gradient from dark ``shadow_hue`` to light ``highlight_hue``
    (degrees, 0..360 each)."""
    gray = _gray(images)
    dark = _hue_rgb(shadow_hue, 0.9, 0.25, like=images)
    light = _hue_rgb(highlight_hue, 0.35, 1.0, like=images)
    return dark + (light - dark) * gray


def _describe_duotone(shadow_hue: float, highlight_hue: float) -> Phrases:
    s, h = _hue_name(shadow_hue), _hue_name(highlight_hue)
    return (
        f"a duotone of {s} and {h}",
        f"two-tone colouring from dark {s} shadows to pale {h} highlights",
        f"a duotone print with {s} shadows and {h} highlights",
    )


@_clamped
def temperature(images: Images, shift: float) -> Images:
    """White-balance shift: positive warms (more red, less blue), negative cools. Range -1..1."""
    s = float(shift)
    gains = torch.tensor([1.0 + 0.3 * s, 1.0 + 0.05 * s, 1.0 - 0.3 * s], dtype=images.dtype)
    return images * gains.view(1, 3, 1, 1)


def _describe_temperature(shift: float) -> Phrases:
    p = _pct(abs(shift))
    kind, cast = ("warmer", "orange") if shift > 0 else ("cooler", "blue")
    w = _word(abs(shift), 0, 1, ("slightly", "noticeably", "much", "far"))
    return (
        f"a {w} {kind} white balance by {p}",
        f"a {cast} colour temperature shift of {p}",
        f"colours made {p} {kind}",
    )


@_clamped
def invert(images: Images, strength: float) -> Images:
    """Mix towards the negative ``1 - x`` by ``strength``. Range 0.6..1 (0.5 would be flat grey)."""
    return _mix(images, kornia.enhance.invert(images), strength)


def _describe_invert(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0.6, 1, ("partial", "strong", "near-complete", "complete"))
    return (
        f"a {w} colour negative at {p}",
        f"colours inverted at {p} strength",
        f"a photographic negative look at {p}",
    )


@_clamped
def channel_swap(images: Images, order: float, strength: float) -> Images:
    """Permute RGB channels (``order`` indexes ``CHANNEL_ORDERS``, 0..2, rounded), mixed in by
    ``strength`` (0..1)."""
    perm = CHANNEL_ORDERS[round(order)][0]
    return _mix(images, images[:, list(perm)], strength)


def _describe_channel_swap(order: float, strength: float) -> Phrases:
    what = CHANNEL_ORDERS[round(order)][1]
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "partial", "half", "strong", "full"))
    return (
        f"a {w} {what} of the colour channels at {p}",
        f"false colours from a {what} of RGB at {p}",
        f"an RGB {what} mixed in at {p}",
    )


@_clamped
def false_colour(images: Images, palette: float, strength: float) -> Images:
    """Map luminance through a colour map (``palette`` indexes ``PALETTES``, 0..5, rounded),
    mixed in by ``strength`` (0..1)."""
    cmap = kornia.color.ColorMap(PALETTES[round(palette)][0], num_colors=256)
    mapped = kornia.color.apply_colormap(_gray(images).clamp(0, 1), cmap).to(images)
    return _mix(images, mapped, strength)


def _describe_false_colour(palette: float, strength: float) -> Phrases:
    name = PALETTES[round(palette)][1]
    p = _pct(strength)
    w = _word(strength, 0, 1, ("faint", "light", "partial", "strong", "full"))
    return (
        f"a {w} {name} false-colour map at {p}",
        f"brightness mapped to a {name} palette at {p}",
        f"{name} heat-map colouring at {p}",
    )


# ---------------------------------------------------------------------------------------------
# optics


@_clamped
def blur(images: Images, sigma: float) -> Images:
    """Gaussian blur with standard deviation ``sigma`` pixels. Range 0.5..5."""
    return _blur(images, sigma)


def _describe_blur(sigma: float) -> Phrases:
    s = _num(sigma)
    w = _word(sigma, 0.5, 5, ("slight", "soft", "strong", "heavy"))
    return (
        f"a {w} gaussian blur of sigma {s}",
        f"soft focus blurred by {_plural(sigma, 'pixel')}",
        f"an out-of-focus look with {_plural(sigma, 'pixel')} of blur",
    )


@_clamped
def sharpen(images: Images, amount: float) -> Images:
    """Unsharp masking: add ``amount`` times the detail above a sigma-1 blur. Range 0.25..3."""
    return images + float(amount) * (images - _blur(images, 1.0))


def _describe_sharpen(amount: float) -> Phrases:
    a = _num(amount)
    w = _word(amount, 0.25, 3, ("gentle", "moderate", "strong", "aggressive"))
    return (
        f"{w} sharpening with amount {a}",
        f"crisper details from an unsharp mask of {a}",
        f"edges sharpened at strength {a}",
    )


@_clamped
def motion_blur(images: Images, length: float, angle: float) -> Images:
    """Linear motion blur ``length`` pixels long (3..21, rounded to odd) at ``angle`` degrees
    anticlockwise from horizontal (0..180)."""
    k = _odd(length)
    return kornia.filters.motion_blur(images, k, float(angle), 0.0, mode="bilinear")


#: names for motion-blur angles (degrees) used in prompts
ANGLE_NAMES: dict[int, str] = {
    0: "horizontal",
    45: "rising diagonal",
    60: "steep rising",
    90: "vertical",
    135: "falling diagonal",
}


def _describe_motion_blur(length: float, angle: float) -> Phrases:
    k = _odd(length)
    way = ANGLE_NAMES.get(round(angle), f"{angle:g}-degree")
    return (
        f"a {way} motion blur {k} pixels long",
        f"{way} camera shake smeared over {k} pixels",
        f"{way} motion streaks of {k} pixels",
    )


@_clamped
def chromatic_aberration(images: Images, shift: float) -> Images:
    """Lateral chromatic aberration: red scaled out and blue in so they fringe by ``shift``
    pixels at the image edge. Range 0.5..5."""
    half = min(images.shape[-2:]) / 2.0
    out = images.clone()
    for channel, sign in ((0, 1.0), (2, -1.0)):
        factor = torch.full(
            (images.shape[0], 2), 1.0 + sign * float(shift) / half, dtype=images.dtype
        )
        out[:, channel : channel + 1] = kornia.geometry.transform.scale(
            images[:, channel : channel + 1], factor, padding_mode="border"
        )
    return out


def _describe_chromatic_aberration(shift: float) -> Phrases:
    s = _num(shift)
    w = _word(shift, 0.5, 5, ("subtle", "visible", "strong", "extreme"))
    return (
        f"{w} chromatic aberration of {_plural(shift, 'pixel')}",
        f"red and blue colour fringes {_plural(shift, 'pixel')} wide",
        f"cheap-lens colour fringing of {s} px",
    )


@_clamped
def vignette(images: Images, strength: float) -> Images:
    """Darken towards the corners; ``strength`` 1 makes the corners black. Range 0..1."""
    h, w = images.shape[-2:]
    grid = kornia.geometry.create_meshgrid(h, w, normalized_coordinates=True, dtype=images.dtype)
    radius = grid.pow(2).sum(-1).sqrt() / math.sqrt(2.0)
    mask = 1.0 - float(strength) * radius.pow(2.0)
    return images * mask.view(1, 1, h, w)


def _describe_vignette(strength: float) -> Phrases:
    p = _pct(strength)
    w = _word(strength, 0, 1, ("subtle", "light", "moderate", "strong", "heavy"))
    return (
        f"a {w} vignette at {p}",
        f"corners darkened by {p}",
        f"a dark lens vignette at {p} strength",
    )


# ---------------------------------------------------------------------------------------------
# registry


def _p(
    group: str,
    fn: Callable[..., Images],
    describe: Callable[..., Phrases],
    **params: tuple[float, float],
) -> Primitive:
    return Primitive(
        name=fn.__name__, fn=fn, params=params, describe=describe, group=group, doc=fn.__doc__ or ""
    )


PRIMITIVES: dict[str, Primitive] = {
    p.name: p
    for p in (
        _p("tone", gamma, _describe_gamma, gamma=(0.3, 3.0)),
        _p("tone", contrast, _describe_contrast, factor=(0.3, 2.5)),
        _p("tone", brightness, _describe_brightness, delta=(-0.5, 0.5)),
        _p("tone", exposure, _describe_exposure, stops=(-2.0, 2.0)),
        _p("tone", faded_blacks, _describe_faded_blacks, amount=(0.0, 0.5)),
        _p("tone", local_contrast, _describe_local_contrast, clip_limit=(1.0, 10.0)),
        _p("style", posterize, _describe_posterize, bits=(1.0, 7.0)),
        _p("style", solarize, _describe_solarize, threshold=(0.1, 0.95)),
        _p("style", threshold, _describe_threshold, level=(0.2, 0.8)),
        _p("style", emboss, _describe_emboss, strength=(0.0, 1.0)),
        _p("style", sketch, _describe_sketch, softness=(0.5, 5.0)),
        _p("style", glowing_edges, _describe_glowing_edges, strength=(0.0, 1.0)),
        _p("style", cartoon, _describe_cartoon, levels=(2.0, 10.0)),
        _p("style", median, _describe_median, radius=(1.0, 2.0)),
        _p("style", oil_paint, _describe_oil_paint, radius=(1.0, 6.0)),
        _p("style", halftone, _describe_halftone, cell=(3.0, 12.0)),
        _p("style", pixelate, _describe_pixelate, block=(2.0, 16.0)),
        _p("colour", sepia, _describe_sepia, strength=(0.0, 1.0)),
        _p("colour", grayscale, _describe_grayscale, strength=(0.0, 1.0)),
        _p("colour", hue_rotate, _describe_hue_rotate, degrees=(-180.0, 180.0)),
        _p("colour", saturation, _describe_saturation, factor=(0.0, 3.0)),
        _p("colour", tint, _describe_tint, hue=(0.0, 360.0), strength=(0.0, 1.0)),
        _p(
            "colour",
            duotone,
            _describe_duotone,
            shadow_hue=(0.0, 360.0),
            highlight_hue=(0.0, 360.0),
        ),
        _p("colour", temperature, _describe_temperature, shift=(-1.0, 1.0)),
        _p("colour", invert, _describe_invert, strength=(0.6, 1.0)),
        _p("colour", channel_swap, _describe_channel_swap, order=(0.0, 2.0), strength=(0.0, 1.0)),
        _p("colour", false_colour, _describe_false_colour, palette=(0.0, 5.0), strength=(0.0, 1.0)),
        _p("optics", blur, _describe_blur, sigma=(0.5, 5.0)),
        _p("optics", sharpen, _describe_sharpen, amount=(0.25, 3.0)),
        _p("optics", motion_blur, _describe_motion_blur, length=(3.0, 21.0), angle=(0.0, 180.0)),
        _p("optics", chromatic_aberration, _describe_chromatic_aberration, shift=(0.5, 5.0)),
        _p("optics", vignette, _describe_vignette, strength=(0.0, 1.0)),
    )
}
