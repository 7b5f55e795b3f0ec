"""``dnw collect``: a LoRA per training concept from the base model, K checkpoints each.

Every concept starts from the same LoRA init (the spec's ``init_seed``), so the dataset lives
in one basin. Training runs until the task's target metric stops improving (no relative gain of
``tol`` over the last ``patience`` evaluations) or ``max_steps``; then K checkpoints are kept
``interval`` steps apart.

Crash safety: a concept's progress is checkpointed under ``.work/<concept>/`` at every
evaluation, with batches fixed by (seed, step), so a killed run resumes where it was and ends
with the same entries. Finished concepts are skipped; concepts whose shard went missing or no
longer matches its checksum are set aside (renamed ``*.damaged``) and collected again. Work is
split by ``--shard i/n``, then by torchrun rank, then by ``--workers`` processes; a concept in
progress is locked, so two commands on one folder share the work instead of colliding.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from denoised_weights.core.dataset import (
    DATASET_CONFIG,
    WeightDataset,
    safe_name,
    sha256_file,
    write_concept,
)
from denoised_weights.core.engine import Callback, TrainableState, Trainer, architecture_step
from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Concept, TargetArchitecture, Task
from denoised_weights.core.io import load_tensors, read_json, save_tensors, versions, write_json
from denoised_weights.core.lora import apply_lora, lora_state
from denoised_weights.core.outputs import claim_output, normalise
from denoised_weights.core.plugins import Registries
from denoised_weights.core.workers import EarlyWorkers, threads_per_worker
from denoised_weights.pipeline.context import build_metrics, resolve_device
from denoised_weights.pipeline.options import CollectOptions


def concept_seed(seed: int, concept_id: str) -> int:
    """A per-concept seed that does not depend on which process collects the concept."""
    return seed * 1_000_003 + int(hashlib.sha256(concept_id.encode()).hexdigest()[:8], 16)


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise DnwError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DnwError(f"--shard {text}: need 0 <= i < n")
    return i, n


def dataset_config(
    task: Task, arch: TargetArchitecture, base: Path, preset: str | None, opts: CollectOptions
) -> dict[str, Any]:
    from denoised_weights.core.components import build_lora_model, lora_fingerprint
    from denoised_weights.pipeline.base import MODEL_FILE, base_info

    base_info(base)
    template = lora_state(build_lora_model(arch))
    task_options = normalise(getattr(task, "options", None) or {})
    return {
        "task": task.name,
        **({"task_options": task_options} if task_options else {}),  # e.g. a pair source
        "architecture": arch.name,
        "preset": preset,
        "config": arch.config,
        "lora_spec": arch.lora_spec().to_dict(),
        "fingerprint": lora_fingerprint(arch),
        "lora_params": sum(v.numel() for v in template.values()),
        "tensor_shapes": {k: list(v.shape) for k, v in template.items()},
        "base": str(base),
        "base_sha256": sha256_file(base / MODEL_FILE),
        "options": asdict(opts),
    }


#: what must agree for a folder's concepts to belong to one dataset
MAKING = ("task", "fingerprint", "base_sha256", "options")


def prepare_dataset(
    out: Path, config: dict[str, Any], *, overwrite: bool = False, check_only: bool = False
) -> dict[str, Any]:
    """Create ``dataset.json`` or check that the folder holds a dataset of the same making."""
    making = normalise({k: config[k] for k in MAKING})
    path = out / DATASET_CONFIG
    if path.is_file():
        old = read_json(path)
        old.setdefault("task", "image-translation")  # datasets from before tasks existed
        changed = [k for k in MAKING if normalise({k: old.get(k)})[k] != making[k]]
        # task options (a leave-family-out split, a pair source) decide which concepts exist
        if normalise({"o": old.get("task_options") or {}}) != normalise(
            {"o": config.get("task_options") or {}}
        ):
            changed.append("task_options")
        if changed:
            what = (
                f"other task options ({old.get('task_options') or 'none'})"
                if changed[0] == "task_options"
                else f"another {changed[0].replace('_', ' ')}"
            )
            raise DnwError(
                f"{out} holds a dataset made with {what}; use a new --out folder or the same "
                "options"
            )
        return old
    if check_only:
        raise DnwError(f"{out}: no {DATASET_CONFIG} (rank 0 should have made it)")
    claim_output(
        out,
        "collect",
        making,
        overwrite=overwrite,
        owned=(DATASET_CONFIG, "shards", "manifest", ".work", "README.md"),
        seed=config["options"]["seed"],
    )
    write_json(path, {**config, "versions": versions()})
    return config


def repair(out: Path) -> list[str]:
    """Set aside concepts whose shard is missing, damaged or unlisted (renamed ``*.damaged``)
    so that they are collected again; returns their ids."""
    redo = []
    for frag_path in sorted((out / "manifest").glob("*.json")):
        problem = WeightDataset.fragment_problem(out, frag_path)
        if problem is None:
            continue
        for p in (frag_path, out / "shards" / f"{frag_path.stem}.safetensors"):
            if p.exists():
                p.rename(p.with_name(p.name + ".damaged"))
        redo.append(frag_path.stem)
    return redo


# -- one concept ---------------------------------------------------------------------------------
def _lock(work: Path) -> bool:
    """Take ``work``'s lock; False when a live process on this machine holds it."""
    work.mkdir(parents=True, exist_ok=True)
    lock = work / "lock"
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, json.JSONDecodeError):
                holder = {}
            if holder == me:
                return True
            if holder.get("host") != me["host"] or _alive(holder.get("pid")):
                return False
            lock.unlink(missing_ok=True)  # its process is gone: take the work over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def collect_concept(
    task: Task,
    arch: TargetArchitecture,
    out: Path,
    concept: Concept,
    *,
    base_model: torch.nn.Module,
    carry: dict[str, torch.Tensor],
    fingerprint: str,
    opts: CollectOptions,
    device: torch.device,
    registries: Registries | None = None,
    position: int = 0,
) -> bool:
    """Train one concept's LoRA and store its K checkpoints (resumes from ``.work/``).

    Returns False when another live process holds the concept."""
    work = out / ".work" / safe_name(concept.id)
    if not _lock(work):
        return False
    cseed = concept_seed(opts.seed, concept.id)
    train = task.make_data(concept, arch=arch, split="train", n=opts.n_train, seed=cseed % (2**31))
    held = task.make_data(
        concept, arch=arch, split="eval", n=opts.n_eval, seed=(cseed + 1) % (2**31)
    )
    metrics = build_metrics(
        list(dict.fromkeys([task.target_metric, *task.metrics[:2]])), registries
    )
    model = apply_lora(copy.deepcopy(base_model), arch.lora_spec())
    tstate = arch.init_training(model, seed=opts.seed, lr=opts.lr or arch.learning_rates["lora"])
    if carry:
        arch.load_training_carry(tstate, carry)
    policy = _KeepPolicy(task, opts, work, model)
    # the last possible kept step: the first evaluation at or past max_steps, then K-1 intervals
    last = -(-opts.max_steps // opts.eval_every) * opts.eval_every
    Trainer(
        architecture_step(arch, model, tstate, device),
        max_steps=last + (opts.checkpoints - 1) * opts.interval,
        batches=lambda step: task.batch(
            train, batch_size=opts.batch_size, seed=cseed % (2**31), step=step
        ),
        parts={"model": TrainableState(model), "training": tstate},
        ckpt_dir=work,
        evaluate=lambda: task.evaluate(arch, model, held, metrics),
        callbacks=[policy],
        desc=concept.id[:28],
        position=position,
    ).run()
    kept, keep_from = policy.kept, policy.keep_from
    states = [load_tensors(work / f"keep_{k['checkpoint']}.safetensors")[0] for k in kept]
    entries = [
        {
            **k,
            "prompts": list(concept.prompts),
            "seed": opts.seed,
            "concept_seed": cseed,
            "lora_init_seed": arch.lora_spec().init_seed,
            "converged_step": keep_from,
            "fingerprint": fingerprint,
            "concept_seconds": round(policy.seconds, 2),
            "eval_seconds": round(policy.eval_seconds, 2),
            "evaluations": policy.evaluations,
            "family": concept.family,
            "params": dict(concept.params),
        }
        for k in kept
    ]
    write_concept(out, concept.id, states, entries)
    shutil.rmtree(work, ignore_errors=True)
    return True


class _KeepPolicy(Callback):
    """Collection's schedule: evaluate every ``eval_every`` steps until the task's target
    metric plateaus (no relative gain of ``tol`` over the last ``patience`` evaluations, after
    ``min_steps``) or ``max_steps``; from there keep a LoRA checkpoint every ``interval``
    steps, K in all, then stop."""

    name = "keep"

    def __init__(
        self, task: Task, opts: CollectOptions, work: Path, model: torch.nn.Module
    ) -> None:
        self.task, self.opts, self.work, self.model = task, opts, work, model
        self.sign = -1.0 if task.higher_is_better else 1.0  # smaller is better after the sign
        self.evals: list[float] = []
        self.keep_from: int | None = None
        self.kept: list[dict[str, Any]] = []
        self.seconds = self.eval_seconds = 0.0
        self.evaluations = 0

    def plateaued(self) -> bool:
        o = self.opts
        scores = [self.sign * v for v in self.evals]
        best_before = min(scores[: -o.patience], default=float("inf"))
        recent = min(scores[-o.patience :])
        return len(scores) > o.patience and recent > best_before - o.tol * abs(best_before)

    def on_step(self, trainer: Trainer) -> None:
        o, step = self.opts, trainer.step
        if self.keep_from is None and step % o.eval_every == 0:
            value = trainer.evaluate()[self.task.target_metric]
            self.evals.append(float("inf") * self.sign if value is None else value)
            if (self.plateaued() and step >= o.min_steps) or step >= o.max_steps:
                self.keep_from = step
        at_keep = self.keep_from is not None and (step - self.keep_from) % o.interval == 0
        if at_keep:
            index = (step - self.keep_from) // o.interval
            if index == len(self.kept):  # not kept yet (a resumed run may have kept it already)
                trainer.guard()
                save_tensors(self.work / f"keep_{index}.safetensors", lora_state(self.model))
                self.kept.append({"checkpoint": index, "step": step, "eval": trainer.evaluate()})
            if len(self.kept) == o.checkpoints:
                trainer.stop()
        if step % o.eval_every == 0 or at_keep:
            trainer.request_checkpoint()

    def on_end(self, trainer: Trainer) -> None:
        self.seconds, self.eval_seconds = trainer.wall_seconds, trainer.eval_seconds
        self.evaluations = trainer.evaluations

    def state_dict(self) -> dict[str, Any]:
        return {"evals": self.evals, "keep_from": self.keep_from, "kept": self.kept}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evals = list(state.get("evals", []))
        self.keep_from = state.get("keep_from")
        self.kept = list(state.get("kept", []))


# -- many concepts -------------------------------------------------------------------------------
@dataclass
class ShardJob:
    """One worker's share of a collection: what it needs to rebuild the task and the
    architecture in its own process, and the concepts it collects."""

    task: str
    task_options: dict[str, Any]
    architecture: str
    arch_config: dict[str, Any]
    out: str
    base: str
    concept_ids: list[str]
    opts: CollectOptions
    device: str | None
    threads: int | None = None
    position: int = 0


def collect_shard(job: ShardJob) -> list[str]:
    """The body of one worker process: rebuild task and architecture by name (from the
    installed plugins), then :func:`collect_concepts`."""
    from denoised_weights.core.components import create_architecture
    from denoised_weights.pipeline.context import resolve_task

    if job.threads:
        torch.set_num_threads(job.threads)
    task = resolve_task(job.task, **job.task_options)
    arch = create_architecture(job.architecture, **job.arch_config)
    return collect_concepts(task, arch, job)


def _warm_worker() -> None:
    """What a collection worker imports while it waits for its share (seconds of start-up
    that overlap the parent's checks): peft for the LoRA layers, torchmetrics for evaluation."""
    import peft  # noqa: F401
    import torchmetrics  # noqa: F401


def _collect_here(
    task: Task, arch: TargetArchitecture, job: ShardJob, registries: Registries | None
) -> list[str]:
    """This process's share, with the worker's thread count while it runs."""
    previous = torch.get_num_threads()
    if job.threads:
        torch.set_num_threads(job.threads)
    try:
        return collect_concepts(task, arch, job, registries)
    finally:
        torch.set_num_threads(previous)


def collect_concepts(
    task: Task, arch: TargetArchitecture, job: ShardJob, registries: Registries | None = None
) -> list[str]:
    """Collect ``job.concept_ids`` one after another; returns those left to another process
    that holds them."""
    from tqdm.auto import tqdm

    from denoised_weights.core.components import lora_fingerprint
    from denoised_weights.pipeline.base import load_base

    dev = resolve_device(job.device)
    out_path = Path(job.out)
    base_model, carry = load_base(Path(job.base), arch, device=dev)
    fingerprint = lora_fingerprint(arch)
    done = set(WeightDataset(out_path).concepts)
    todo = [c for c in job.concept_ids if c not in done]
    skipped = []
    position = job.position
    for cid in tqdm(
        todo,
        desc=f"worker {position}",
        position=position * 2,
        unit="concept",
        leave=False,
        mininterval=2,
    ):
        ok = collect_concept(
            task,
            arch,
            out_path,
            task.get_concept(cid),
            base_model=base_model,
            carry=carry,
            fingerprint=fingerprint,
            opts=job.opts,
            device=dev,
            registries=registries,
            position=position * 2 + 1,
        )
        if not ok:
            skipped.append(cid)
    return skipped


def _check_rebuildable(task: Task, arch: TargetArchitecture, registries: Registries) -> None:
    """Worker processes rebuild the task and the architecture from the installed plugins: a
    one-line error unless those give what ``registries`` (a caller's plugin manager) gives."""
    from denoised_weights.core.plugins import default_registries

    installed = default_registries()
    for kind, name in (("tasks", task.name), ("architectures", arch.name)):
        given, there = getattr(registries, kind), getattr(installed, kind)
        if name not in there or there.get(name).load() is not given.get(name).load():
            raise DnwError(
                f"{kind[:-1]} {name!r} comes from a plugin manager built in this process, which "
                "worker processes cannot reach: collect with workers=1, or install the plugin "
                "(an entry point) so that every process loads it"
            )


def _distributed_rank() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def collect(
    task: Task,
    arch: TargetArchitecture,
    base: str | Path,
    out: str | Path,
    *,
    concept_ids: Sequence[str] | None = None,
    opts: CollectOptions | None = None,
    preset: str | None = None,
    shard: tuple[int, int] = (0, 1),
    workers: int = 1,
    device: str | None = None,
    overwrite: bool = False,
    echo: Any = None,
    registries: Registries | None = None,
) -> WeightDataset:
    """Collect the dataset (the part of it this process is responsible for) and write its card.

    With one worker the given ``task`` and ``arch`` are used as they are (and ``registries``
    for the metrics); worker processes rebuild them by name from the installed plugins."""
    out, base = Path(out), Path(base)
    opts = opts or CollectOptions()
    if opts.lr is None:
        opts = CollectOptions(**{**asdict(opts), "lr": arch.learning_rates["lora"]})
    if workers < 1:
        raise DnwError(f"--workers must be at least 1, got {workers}")
    ids = list(concept_ids) if concept_ids is not None else [c.id for c in task.concepts("train")]
    for cid in ids:
        if task.get_concept(cid).split != "train":
            raise DnwError(f"concept {cid!r} is held out; only training concepts are collected")
    from denoised_weights.pipeline.base import load_base

    rank, world = _distributed_rank()
    mine = ids[shard[0] :: shard[1]][rank::world]
    # with W workers, this process collects one share and W-1 processes take the others; they
    # start now, so their start (imports: several seconds each) overlaps the checks below
    procs = 1
    if workers > 1:
        done: set[str] = set()
        if (out / DATASET_CONFIG).is_file() and not overwrite:
            # a damaged manifest counts nothing done here: repair() below sets it aside
            with contextlib.suppress(DnwError):
                done = set(WeightDataset(out).concepts)
        procs = max(1, min(workers, sum(c not in done for c in mine)))
        if registries is not None and procs > 1:
            _check_rebuildable(task, arch, registries)
    with EarlyWorkers(
        collect_shard, procs - 1, "collection", warm=_warm_worker, first_number=1
    ) as others:
        load_base(base, arch)  # a clear error before any work if the base does not fit
        config = dataset_config(task, arch, base, preset, opts)
        if world > 1:  # under torchrun: rank 0 creates the folder, the others check it
            import torch.distributed as dist

            dist.init_process_group("gloo")
            if rank == 0:
                prepare_dataset(out, config, overwrite=overwrite)
            dist.barrier()
            prepare_dataset(out, config, check_only=True)
        else:
            prepare_dataset(out, config, overwrite=overwrite)
            redone = repair(out)
            if redone and echo:
                echo(
                    f"{len(redone)} damaged or incomplete concept(s) "
                    "set aside (*.damaged) and collected again"
                )
        done = set(WeightDataset(out).concepts)
        left = [c for c in mine if c not in done]
        procs = max(1, min(procs, len(left)))
        threads = threads_per_worker(procs, world) if procs > 1 or world > 1 else None
        job = ShardJob(
            task=task.name,
            task_options=dict(getattr(task, "options", {}) or {}),
            architecture=arch.name,
            arch_config=arch.config,
            out=str(out),
            base=str(base),
            concept_ids=left[0::procs],
            opts=opts,
            device=device,
            threads=threads,
        )
        others.run(
            [(replace(job, concept_ids=left[w::procs], position=w),) for w in range(1, procs)],
            local=lambda: _collect_here(task, arch, job, registries),
        )
    # every share of this command has finished (a failed one raised above), so what is still
    # missing was held by another command on this folder: counted over all the shares
    have = set(WeightDataset(out).concepts)
    skipped = [c for c in left if c not in have]
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if skipped and echo:
        echo(
            f"{len(skipped)} concept(s) were being collected "
            "by another process; rerun later to check"
        )
    dataset = WeightDataset(out)
    if rank == 0:
        write_card(dataset)
    return dataset


def write_card(dataset: WeightDataset) -> Path:
    """The dataset card: counts, preset, options, versions and how it was made."""
    info = dataset.info()
    cfg = dataset.config
    metric = (
        next(iter(dataset.entries[0].get("eval") or {"value": 0}), "value")
        if dataset.entries
        else None
    )
    values = [
        e["eval"][metric]
        for e in dataset.entries
        if e.get("eval") and e["eval"].get(metric) is not None
    ]
    conv = [e["converged_step"] for e in dataset.entries if e.get("checkpoint") == 0]
    lines = [
        f"# Weight dataset ({cfg.get('task', 'image-translation')}: "
        f"{cfg.get('architecture')}, preset {cfg.get('preset')})",
        "",
        "LoRA adapters of one base model, one per training concept, with K checkpoints each,",
        "collected by `dnw collect` (denoised-weights). Every adapter starts from the same LoRA",
        "init seed, so all of them live in one basin.",
        "",
        f"- concepts: {info['concepts']}; entries: {info['entries']}; "
        f"checkpoints per concept: {info['checkpoints_per_concept']}",
        f"- LoRA parameters per adapter: {cfg.get('lora_params')}; "
        f"fingerprint `{cfg.get('fingerprint')}`",
        f"- size on disk: {info['size_bytes'] / 1e6:.1f} MB",
        f"- base model: `{cfg.get('base')}` (SHA-256 {str(cfg.get('base_sha256'))[:16]}...)",
        f"- options: `{cfg.get('options')}`",
        f"- versions: `{cfg.get('versions')}`",
    ]
    if values:
        values.sort()
        lines.append(
            f"- eval {metric} at the kept checkpoints: median "
            f"{values[len(values) // 2]:.4f}, min {values[0]:.4f}, max {values[-1]:.4f}"
        )
    if conv:
        lines.append(
            "- step at which training was judged converged: median "
            f"{sorted(conv)[len(conv) // 2]}, max {max(conv)}"
        )
    lines += [
        "",
        "Files: `shards/<concept>.safetensors` (each LoRA tensor stacked over the K checkpoints),",
        "`manifest/<concept>.json` (entries: concept, "
        "prompts, checkpoint, step, eval metrics, seeds,",
        "fingerprint; plus the shard's SHA-256). Read with "
        "`denoised_weights.core.dataset.WeightDataset`.",
    ]
    path = dataset.path / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
