"""The image-translation task: catalogue concepts applied to real photos, pix2pix folders,
flipped batches, eval L1 (lower is better) and image grids.

``exclude_families`` (a task option: ``--task-option exclude_families=vignette,sepia``) holds
whole edit types out for leave-one-family-out experiments: every concept using one of them is
held out as "family", and neither ``sample_concept`` nor the train split ever returns it.

``source`` (``-T source=NAME``, or ``--source NAME`` of ``dnw base`` and ``dnw collect``) makes
each concept's pairs with another registered pair source than the catalogue's edits, e.g. the
paper's route: ``--source instruct-pix2pix --model DIR`` edits photo crops with each concept's
prompt. ``model_dir`` (``--model``) and ``source_options`` (``-S KEY=VALUE``, or JSON text
through ``-T``) go to the source's factory, which also gets the concept, its prompt, the
photos and the network's image size where it takes them.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import (
    TRAIN,
    Concept,
    TargetArchitecture,
    Task,
    TaskData,
    TaskPreset,
    concat_data,
)
from denoised_weights.plugins.image_translation import concepts as catalogue
from denoised_weights.plugins.image_translation import parsing, sampling
from denoised_weights.plugins.image_translation.edits import PRIMITIVES

PRESETS = {
    # the whole pipeline at toy size: minutes, for tests and CI
    "smoke": TaskPreset(
        arch="tiny",
        base={"steps": 120},
        collect={
            "concepts": 6,
            "checkpoints": 2,
            "max_steps": 40,
            "eval_every": 20,
            "interval": 10,
            "n_train": 32,
            "n_eval": 16,
        },
        fit={"max_steps": 200, "batch_size": 64, "val_every": 100},
        concepts=2,
        seeds=1,
        max_steps=40,
        eval_every=20,
        n_train=32,
        n_eval=16,
        metrics=("l1",),
        snapshot_at=(0, 20),
        step0_all=False,
    ),
    # dnw demo --from-scratch: the whole pipeline in minutes on a 2-core CPU (a weak generator)
    "demo": TaskPreset(
        arch="small",
        base={"steps": 1500},
        collect={
            "concepts": 16,
            "checkpoints": 2,
            "max_steps": 100,
            "eval_every": 25,
            "interval": 20,
        },
        fit={"max_minutes": 3.0},
        concepts=1,
        seeds=1,
        max_steps=150,
        eval_every=50,
        metrics=("l1", "psnr", "ssim"),
        snapshot_at=(0, 20, 100),
        step0_all=False,
    ),
    # the README's table on a 2-core CPU: every single-edit training concept (191), 80 steps,
    # then 3 checkpoints; fit's small default length (7,500 steps) with clean-sample prediction
    "small": TaskPreset(
        arch="small",
        base={"steps": 2500},
        collect={
            "concepts": None,
            "max_parts": 1,
            "checkpoints": 3,
            "max_steps": 80,
            "eval_every": 20,
            "interval": 10,
        },
        fit={"prediction_type": "sample"},
        concepts=8,
        seeds=2,
        max_steps=400,
        eval_every=50,
        metrics=("l1", "psnr", "ssim"),
    ),
    # the paper's scale, for a GPU
    "paper": TaskPreset(
        arch="paper",
        base={"steps": 20000},
        collect={
            "concepts": None,
            "checkpoints": 5,
            "max_steps": 1500,
            "eval_every": 100,
            "interval": 50,
        },
        fit={"max_steps": 100000},
        concepts=16,
        seeds=3,
        max_steps=2000,
        eval_every=100,
        metrics=("l1", "psnr", "ssim", "lpips", "fid"),
        snapshot_at=(0, 100, 500),
    ),
}


def to_core(c: catalogue.Concept, exclude: frozenset[str] = frozenset()) -> Concept:
    """The catalogue's concept as the pipeline sees it: family = the edits, params = values;
    a concept using an ``exclude``d primitive is held out as "family"."""
    params = tuple((f"{name}.{k}", float(v)) for name, p in c.steps for k, v in p.items())
    split, holdout = c.split, c.holdout
    if exclude & set(c.primitives):
        split, holdout = catalogue.HELD_OUT, catalogue.FAMILY
    return Concept(
        id=c.id,
        prompts=c.prompts,
        split=split,
        family="+".join(c.primitives),
        params=params,
        holdout=holdout,
    )


def parse_families(names: str | Iterable[str] | None) -> frozenset[str]:
    """Primitive names from ``"vignette,sepia"`` (or a list; ``-`` or ``_``, any case)."""
    if isinstance(names, str):
        names = names.split(",")
    wanted = {n.strip().lower().replace("-", "_") for n in names or ()} - {""}
    unknown = sorted(wanted - set(PRIMITIVES))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(PRIMITIVES), n=3, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise DnwError(
            f"exclude_families: unknown edit {unknown[0]!r}{hint} "
            f"(see 'dnw list concepts --task image-translation')"
        )
    return frozenset(wanted)


def _source_options(options: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The ``source_options`` task option: a mapping, or its JSON text
    (``-T source_options=...``)."""
    if isinstance(options, str):
        try:
            options = json.loads(options) if options.strip() else {}
        except json.JSONDecodeError:
            options = None
        if not isinstance(options, dict):
            raise DnwError(
                "source_options: give a JSON object, e.g. -T "
                "source_options='{\"steps\": 20}', or use -S KEY=VALUE"
            )
    return dict(options or {})


class ImageTranslationTask(Task):
    """Photo-to-photo translation, one concept per edit of the catalogue (or a user's pairs)."""

    name = "image-translation"
    default_example_encoder = "pair-cnn"
    target_metric = "l1"
    higher_is_better = False
    metrics = ("l1", "psnr", "ssim", "lpips", "fid")
    default_architecture = "e2gan"
    default_preset = "small"
    input_keys = ("A",)
    target_key = "B"

    def __init__(
        self,
        photos_dir: str | Path | None = None,
        identity_fraction: float = 0.125,
        exclude_families: str | Iterable[str] | None = None,
        source: str = "catalogue",
        model_dir: str | Path | None = None,
        source_options: Mapping[str, Any] | str | None = None,
    ) -> None:
        self.photos_dir = str(photos_dir) if photos_dir else None
        self.identity_fraction = identity_fraction
        self.exclude_families = parse_families(exclude_families)
        self.source = source or "catalogue"
        self.model_dir = str(model_dir) if model_dir else None
        self.source_options = _source_options(source_options)
        self.options: dict[str, Any] = {"photos_dir": self.photos_dir} if self.photos_dir else {}
        if self.exclude_families:  # in catalogue order, so equal sets give equal options
            names = [n for n in PRIMITIVES if n in self.exclude_families]
            self.options["exclude_families"] = ",".join(names)
        if not self._catalogue_only:  # recorded only when set: earlier runs keep their options
            self.options.update(source=self.source)
            if self.model_dir:
                self.options["model_dir"] = self.model_dir
            if self.source_options:
                self.options["source_options"] = dict(self.source_options)
            self._pair_source(self.concepts(TRAIN)[0], 64)  # a one-line error now, not mid-run

    @property
    def _catalogue_only(self) -> bool:
        return self.source == "catalogue" and not self.model_dir and not self.source_options

    def _pair_source(self, concept: Concept, size: int) -> Any:
        """The pair source that makes ``concept``'s pairs at ``size`` (``source`` option)."""
        from denoised_weights.plugins.image_translation.sources import make_pair_source

        implicit = {
            "concept": concept.id,
            "prompt": concept.prompt,
            "size": size,
            "photos_dir": self.photos_dir,
        }
        given = {"model_dir": self.model_dir}
        return make_pair_source(self.source, given, self.source_options, implicit=implicit)[0]

    @property
    def presets(self) -> dict[str, TaskPreset]:
        return dict(PRESETS)

    @cached_property
    def _concepts(self) -> list[Concept]:
        return [to_core(c, self.exclude_families) for c in catalogue.catalogue()]

    @cached_property
    def _templates(self) -> list[tuple[str, ...]]:
        return [tuple(c.family.split("+")) for c in self.concepts(TRAIN)]

    def concepts(self, split: str | None = None) -> list[Concept]:
        if split is not None:
            catalogue.concepts(split)  # an unknown split: a one-line error
        return [c for c in self._concepts if split is None or c.split == split]

    def get_concept(self, id_or_prompt: str) -> Concept:
        """A catalogue concept by id or prompt, or any well-formed id or prompt of edits at other
        values (a sampled ``gamma-1.47``), split by the catalogue's rules."""
        return to_core(parsing.resolve(id_or_prompt), self.exclude_families)

    def sample_concept(self, generator: Any) -> Concept:
        """A train concept (a single edit or a train composition) at random values of the train
        ranges, outside every held-out margin (see :mod:`.sampling`)."""
        if not self._templates:
            raise DnwError("no training concepts to sample: exclude_families holds out every edit")
        return to_core(sampling.sample_concept(self._templates, generator), self.exclude_families)

    def make_data(
        self, concept: Concept, *, arch: TargetArchitecture, split: str, n: int, seed: int
    ) -> TaskData:
        from denoised_weights.plugins.image_translation.pairs import CataloguePairs

        if self._catalogue_only:
            source = CataloguePairs(concept.id, arch.image_size, self.photos_dir)
        else:
            source = self._pair_source(concept, arch.image_size)
        a, b = source.pairs(n, split=split, seed=seed)
        return {"A": a, "B": b}

    def load_data(self, path: Any, *, arch: TargetArchitecture, split: str) -> TaskData:
        """A pix2pix folder (A/ and B/, or side-by-side AB): ``split`` "train" or "eval" (a fixed
        10% of it), or "all"."""
        from denoised_weights.plugins.image_translation.pairs import FolderPairs

        folder = FolderPairs(path, arch.image_size)
        a, b = folder.all_pairs() if split == "all" else folder.pairs(split=split)
        return {"A": a, "B": b}

    def batch(self, data: TaskData, *, batch_size: int, seed: int, step: int) -> TaskData:
        """Random pairs with random horizontal flips, fixed by (seed, step)."""
        a, b = data["A"], data["B"]
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(a), (batch_size,), generator=g)
        flip = torch.rand(batch_size, generator=g) < 0.5
        xa, xb = a[idx].clone(), b[idx].clone()
        xa[flip], xb[flip] = xa[flip].flip(-1), xb[flip].flip(-1)
        return {"A": xa, "B": xb}

    def base_data(
        self,
        arch: TargetArchitecture,
        concepts: Sequence[Concept],
        *,
        n_per_concept: int,
        seed: int,
    ) -> TaskData:
        """Every concept's pairs plus a share of "no edit" pairs (a photo and itself), which
        teaches the base to keep an image's content."""
        from denoised_weights.plugins.image_translation.photos import sample_crops

        mixture = super().base_data(arch, concepts, n_per_concept=n_per_concept, seed=seed)
        n_identity = round(self.identity_fraction * len(concepts) * n_per_concept)
        if not n_identity:
            return mixture
        same = sample_crops(
            n_identity, arch.image_size, split="train", seed=seed + 4242, photos_dir=self.photos_dir
        )
        return concat_data([mixture, {"A": same, "B": same}])

    def loss(self, output: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """L1 to the target images (the reconstruction half of the pix2pix loss)."""
        return torch.nn.functional.l1_loss(output, batch["B"])

    def postprocess(self, output: torch.Tensor) -> torch.Tensor:
        return output.clamp(0, 1)

    def preview(
        self, data: TaskData, outputs: Mapping[str, torch.Tensor], path: Any, title: str = ""
    ) -> Path:
        from denoised_weights.plugins.image_translation.pairs import save_labelled_grid

        rows = [("input", data["A"]), ("target", data["B"]), *outputs.items()]
        return save_labelled_grid(Path(path), rows, title)
