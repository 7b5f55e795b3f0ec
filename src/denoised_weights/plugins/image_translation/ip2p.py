"""Paired images made by editing photos with InstructPix2Pix (the paper's route to paired data).

:class:`InstructPix2PixPairs` crops photos (:func:`~.photos.sample_crops`) as sources ``A`` and
edits them with diffusers' ``StableDiffusionInstructPix2PixPipeline`` following one text
instruction to get targets ``B``. The model is read only from a local directory (nothing is
downloaded); it is meant for a GPU, where it runs in float16.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import PairSource

#: ``source_images(n, size, *, split, seed, photos_dir) -> [n, 3, size, size]`` in [0, 1]
SourceImages = Callable[..., torch.Tensor]

_WHAT_TO_PASS = (
    "pass model_dir= a local directory of an InstructPix2Pix diffusers model "
    "(e.g. a downloaded copy of timbrooks/instruct-pix2pix)"
)


#: the last pipeline loaded, by (model folder, device)
_LOADED: dict[tuple[str, str], Any] = {}


def _sample_crops(n: int, size: int, **kwargs: Any) -> torch.Tensor:
    from denoised_weights.plugins.image_translation.photos import sample_crops

    return sample_crops(n, size, **kwargs)


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` in newer diffusers, ``torch_dtype`` before."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


class InstructPix2PixPairs(PairSource):
    """Photo crops ``A`` and their InstructPix2Pix edits ``B`` under one ``prompt``.

    The pipeline is loaded lazily from ``model_dir`` (or injected as ``pipeline``) and runs on
    ``device`` (CUDA when available) in batches of ``batch_size``; batch ``i`` is seeded with
    ``seed + i``, so the same arguments give the same pairs on the same device. The edit runs
    at ``edit_size`` (default ``size``; diffusion models edit poorly far below their training
    resolution) and both images are then resized to ``size``.
    """

    def __init__(
        self,
        prompt: str,
        model_dir: str | Path | None,
        size: int = 64,
        photos_dir: str | Path | None = None,
        steps: int = 20,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        device: str | None = None,
        batch_size: int = 4,
        pipeline: Any = None,
        *,
        edit_size: int | None = None,
        source_images: SourceImages = _sample_crops,
    ) -> None:
        if size < 1 or steps < 1 or batch_size < 1 or (edit_size or size) < 8:
            raise DnwError(
                f"need steps >= 1, batch_size >= 1 and an edit size of at least 8 pixels, got "
                f"size={size}, edit_size={edit_size}, steps={steps}, batch_size={batch_size}"
            )
        self.prompt = prompt
        self.model_dir = None if model_dir is None else Path(model_dir).expanduser()
        self.size = size
        self.edit_size = edit_size or size
        self.photos_dir = photos_dir
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.image_guidance_scale = image_guidance_scale
        self.batch_size = batch_size
        self.source_images = source_images
        self._pipeline = pipeline
        if device is None and pipeline is not None:
            device = str(getattr(pipeline, "device", "cpu"))
        self.device = device or _default_device()
        if pipeline is None:  # fail at construction, not after the first crops
            self._check_model_dir()

    def _check_model_dir(self) -> Path:
        d = self.model_dir
        if d is None or not (d / "model_index.json").is_file():
            where = "no model_dir given" if d is None else f"no diffusers model at {d}"
            raise DnwError(f"{where}: {_WHAT_TO_PASS}")
        return d

    @property
    def pipeline(self) -> Any:
        """The InstructPix2Pix pipeline, loaded on first use."""
        if self._pipeline is None:
            self._pipeline = self._load()
        return self._pipeline

    def _load(self) -> Any:
        """The pipeline of ``model_dir`` on ``device``; the last one loaded is kept, so the
        sources a task makes for one concept after another load the model once."""
        model_dir = self._check_model_dir()
        key = (str(model_dir.resolve()), str(self.device))
        if key not in _LOADED:
            _LOADED.clear()  # one model in memory at a time
            _LOADED[key] = self._load_from(model_dir)
        return _LOADED[key]

    def _load_from(self, model_dir: Path) -> Any:
        from diffusers import StableDiffusionInstructPix2PixPipeline

        dtype = torch.float16 if torch.device(self.device).type == "cuda" else torch.float32
        try:
            pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
                model_dir,
                local_files_only=True,
                safety_checker=None,
                requires_safety_checker=False,
                **{_dtype_kwarg(): dtype},
            )
        except Exception as err:  # diffusers raises many types for a broken directory
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DnwError(f"cannot load {model_dir} ({reason}): {_WHAT_TO_PASS}") from err
        in_channels = pipe.unet.config.in_channels
        if in_channels != 8:
            raise DnwError(
                f"{model_dir} is not an InstructPix2Pix model (its UNet takes {in_channels} "
                f"input channels, not 8): {_WHAT_TO_PASS}"
            )
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(self.device)

    def pairs(
        self, n: int, *, split: str = "train", seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)``: ``n`` photo crops of ``split`` and their edits, ``[n, 3, size, size]``."""
        a = self.source_images(
            n, self.edit_size, split=split, seed=seed, photos_dir=self.photos_dir
        ).float()
        b = torch.empty_like(a)
        if n > 0:
            pipe = self.pipeline
            with tqdm(total=n, desc="instruct-pix2pix", unit="img", leave=False) as bar:
                for i, start in enumerate(range(0, n, self.batch_size)):
                    batch = a[start : start + self.batch_size]
                    out = pipe(
                        prompt=[self.prompt] * len(batch),
                        image=batch,
                        num_inference_steps=self.steps,
                        guidance_scale=self.guidance_scale,
                        image_guidance_scale=self.image_guidance_scale,
                        generator=torch.Generator(self.device).manual_seed(seed + i),
                        output_type="pt",
                    ).images
                    b[start : start + len(batch)] = _resize(out.float().cpu(), a.shape[-1])
                    bar.update(len(batch))
        return _resize(a, self.size), _resize(b, self.size)


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` resized to ``size`` x ``size`` (antialiased) and clamped to [0, 1], as float32."""
    if x.shape[0] == 0:
        return x.new_empty(0, x.shape[1], size, size, dtype=torch.float32)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    return x.float().clamp_(0.0, 1.0)
