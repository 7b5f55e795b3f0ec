"""The weight dataset: per-concept safetensors shards of stacked LoRA checkpoints + a manifest.

Layout of a dataset folder::

    dataset.json                 architecture, config, LoRA spec, fingerprint, collection options
    shards/<concept>.safetensors every LoRA tensor stacked over the concept's K checkpoints
    manifest/<concept>.json      the concept's entries (one per checkpoint) + the shard's SHA-256
    README.md                    the dataset card

A shard is written (atomically) before its manifest fragment, and a fragment is the only thing
that makes a concept part of the dataset, so a run killed at any moment leaves no half entry.
Each concept is written by exactly one process, so ranks and workers never write one file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError
from denoised_weights.core.io import (
    load_tensors,
    read_json_object,
    save_tensors,
    write_json,
)

DATASET_CONFIG = "dataset.json"
FRAGMENT_KEYS = ("concept", "shard", "sha256", "entries")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_name(concept_id: str) -> str:
    """A file-system-safe, collision-free name for a concept id."""
    clean = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in concept_id)
    return (
        clean
        if clean == concept_id
        else f"{clean}-{hashlib.sha1(concept_id.encode()).hexdigest()[:8]}"
    )


def write_concept(
    root: Path, concept_id: str, states: list[dict[str, Any]], entries: list[dict[str, Any]]
) -> None:
    """Store one concept's K checkpoint states as one shard, then its manifest fragment."""
    import torch

    if not states or len(states) != len(entries):
        raise DnwError(f"concept {concept_id}: need one entry per checkpoint state")
    name = safe_name(concept_id)
    stacked = {key: torch.stack([s[key] for s in states]) for key in states[0]}
    shard = root / "shards" / f"{name}.safetensors"
    save_tensors(shard, stacked, {"concept": concept_id, "checkpoints": str(len(states))})
    fragment = {
        "concept": concept_id,
        "shard": f"shards/{name}.safetensors",
        "sha256": sha256_file(shard),
        "entries": [{**e, "concept": concept_id, "row": i} for i, e in enumerate(entries)],
    }
    write_json(root / "manifest" / f"{name}.json", fragment)


class WeightDataset:
    """Read access to a weight dataset folder (what the blocker and generator use).

    Every manifest fragment is checked when read (its keys), and every shard against the
    fragment's SHA-256 the first time this object loads it: a damaged dataset is a one-line
    error that says to rerun ``dnw collect``, which collects damaged concepts again.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / DATASET_CONFIG).is_file():
            raise DnwError(
                f"{self.path}: not a weight dataset (no "
                f"{DATASET_CONFIG}); make one with 'dnw collect'"
            )
        self.config: dict[str, Any] = read_json_object(
            self.path / DATASET_CONFIG,
            "dataset description",
            ("architecture", "config", "fingerprint"),
        )
        self._fragments: list[dict[str, Any]] | None = None
        self._verified: set[str] = set()

    @property
    def fingerprint(self) -> str:
        return self.config["fingerprint"]

    @staticmethod
    def read_fragment(path: Path) -> dict[str, Any]:
        frag = read_json_object(path, "manifest fragment", FRAGMENT_KEYS)
        if not isinstance(frag["entries"], list) or not frag["entries"]:
            raise DnwError(
                f"{path}: not a valid manifest fragment (no entries); the file is damaged"
            )
        for e in frag["entries"]:
            if not isinstance(e, dict) or "checkpoint" not in e or "prompts" not in e:
                raise DnwError(
                    f"{path}: an entry lacks its checkpoint or prompts; the file is damaged"
                )
        return frag

    @classmethod
    def fragment_problem(cls, root: Path, path: Path) -> str | None:
        """What is wrong with one concept (its fragment and shard), or None."""
        try:
            frag = cls.read_fragment(path)
        except DnwError as exc:
            return str(exc)
        shard = root / frag["shard"]
        if not shard.is_file():
            return f"{frag['concept']}: shard {frag['shard']} is missing"
        if sha256_file(shard) != frag["sha256"]:
            return f"{frag['concept']}: shard {frag['shard']} does not match its checksum"
        return None

    def fragments(self) -> list[dict[str, Any]]:
        if self._fragments is None:
            folder = self.path / "manifest"
            files = sorted(folder.glob("*.json")) if folder.is_dir() else []
            self._fragments = [self.read_fragment(f) for f in files]
        return self._fragments

    @property
    def entries(self) -> list[dict[str, Any]]:
        return [e for frag in self.fragments() for e in frag["entries"]]

    @property
    def concepts(self) -> list[str]:
        return [frag["concept"] for frag in self.fragments()]

    def __len__(self) -> int:
        return len(self.entries)

    def load_concept(self, concept_id: str) -> list[dict[str, Any]]:
        """The concept's K states, in checkpoint order."""
        frag = next((f for f in self.fragments() if f["concept"] == concept_id), None)
        if frag is None:
            raise DnwError(f"{self.path}: no concept {concept_id!r} in this dataset")
        shard = self.path / frag["shard"]
        if frag["shard"] not in self._verified:
            if not shard.is_file() or sha256_file(shard) != frag["sha256"]:
                state = "is missing" if not shard.is_file() else "does not match its checksum"
                raise DnwError(
                    f"{shard} {state}: the dataset is damaged; rerun 'dnw collect' on it "
                    "to collect that concept again"
                )
            self._verified.add(frag["shard"])
        stacked, _ = load_tensors(shard, finite=True)
        k = len(frag["entries"])
        return [{key: value[i].clone() for key, value in stacked.items()} for i in range(k)]

    def iter_states(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """``(entry, state)`` for every entry, concept by concept."""
        for frag in self.fragments():
            states = self.load_concept(frag["concept"])
            yield from zip(frag["entries"], states, strict=True)

    def info(self) -> dict[str, Any]:
        entries = self.entries
        per_concept = sorted({len(f["entries"]) for f in self.fragments()})
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        times = [f["entries"][0].get("concept_seconds") for f in self.fragments() if f["entries"]]
        return {
            "path": str(self.path),
            "architecture": self.config.get("architecture"),
            "preset": self.config.get("preset"),
            "fingerprint": self.fingerprint,
            "concepts": len(self.fragments()),
            "entries": len(entries),
            "checkpoints_per_concept": per_concept[0] if len(per_concept) == 1 else per_concept,
            "lora_params": self.config.get("lora_params"),
            "size_bytes": size,
            # wall seconds spent per concept, summed (a worker-seconds figure; None when the
            # dataset was collected before this was recorded)
            "collection_seconds": (round(sum(times), 1) if times and None not in times else None),
        }

    def verify(self) -> list[str]:
        """Problems found (empty when every shard is readable and matches the manifest)."""
        problems = []
        seen: set[tuple[str, int]] = set()
        expected_shapes = self.config.get("tensor_shapes", {})
        for path in sorted((self.path / "manifest").glob("*.json")):
            try:
                frag = self.read_fragment(path)
            except DnwError as exc:
                problems.append(str(exc))
                continue
            shard = self.path / frag["shard"]
            if not shard.is_file():
                problems.append(f"{frag['concept']}: shard {frag['shard']} is missing")
                continue
            if sha256_file(shard) != frag["sha256"]:
                problems.append(
                    f"{frag['concept']}: shard {frag['shard']} does not match its checksum"
                )
                continue
            try:
                stacked, _ = load_tensors(shard, finite=True)
            except DnwError as exc:
                problems.append(f"{frag['concept']}: {exc}")
                continue
            k = len(frag["entries"])
            for key, shape in expected_shapes.items():
                if key not in stacked or list(stacked[key].shape) != [k, *shape]:
                    problems.append(
                        f"{frag['concept']}: tensor {key} missing or of the wrong shape"
                    )
                    break
            for e in frag["entries"]:
                ident = (e["concept"], e["checkpoint"])
                if ident in seen:
                    problems.append(f"{e['concept']}: checkpoint {e['checkpoint']} appears twice")
                seen.add(ident)
                if e.get("fingerprint") != self.fingerprint:
                    problems.append(f"{e['concept']}: entry made for another fingerprint")
        return problems
