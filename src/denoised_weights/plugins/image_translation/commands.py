"""``dnw`` commands of the image-translation plugin: concepts, pairs, base, finetune."""

from __future__ import annotations

from pathlib import Path

import click

SPLIT_CHOICE = click.Choice(["train", "eval"])
#: base pretraining steps per preset (small: about 13 minutes on 2 CPU cores)
BASE_STEPS = {"tiny": 60, "small": 2500, "paper": 20000}
#: the demo's shorter base schedule (small: about 6 minutes on 2 CPU cores)


def _arch(preset: str):
    from denoised_weights.api import create_architecture

    return create_architecture("e2gan", preset)


def add_commands(cli: click.Group) -> None:
    from denoised_weights.cli import echo_json

    list_group = cli.commands.get("list")

    @click.command(name="concepts")
    @click.option(
        "--split", type=click.Choice(["train", "held-out"]), default=None, help="Only this split."
    )
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def list_concepts(split: str | None, as_json: bool) -> None:
        """List the concept catalogue (id, split, prompts)."""
        from denoised_weights.plugins.image_translation.concepts import concepts

        rows = [{"id": c.id, "split": c.split, "prompts": list(c.prompts)} for c in concepts(split)]
        if as_json:
            echo_json(rows)
            return
        for row in rows:
            click.echo(f"{row['id']:<40} {row['split']:<9} {row['prompts'][0]}")

    if isinstance(list_group, click.Group):
        list_group.add_command(list_concepts)

    @cli.command()
    @click.option(
        "--concept", "-c", required=True, help="Catalogue concept id or one of its prompts."
    )
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Output folder (A/ and B/).",
    )
    @click.option(
        "-n",
        "count",
        type=click.IntRange(min=1),
        default=64,
        show_default=True,
        help="Number of pairs.",
    )
    @click.option(
        "--split",
        type=SPLIT_CHOICE,
        default="train",
        show_default=True,
        help="Photos to crop from.",
    )
    @click.option(
        "--size",
        type=click.IntRange(min=8),
        default=64,
        show_default=True,
        help="Square image size.",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--photos",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Your own photo folder.",
    )
    def pairs(
        concept: str, out: Path, count: int, split: str, size: int, seed: int, photos: Path | None
    ) -> None:
        """Write N (photo, edited photo) pairs of a catalogue concept in the pix2pix A/B layout."""
        from denoised_weights.plugins.image_translation.pairs import CataloguePairs, write_pairs

        source = CataloguePairs(concept, size, photos)
        a, b = source.pairs(count, split=split, seed=seed)
        info = {
            "concept": source.concept.id,
            "prompts": list(source.prompts),
            "split": split,
            "seed": seed,
            "size": size,
        }
        write_pairs(out, a, b, info)
        click.echo(f"wrote {count} pairs of {source.concept.id} to {out}")

    @cli.command()
    @click.option("--preset", "-p", default="small", show_default=True, help="e2gan preset.")
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option(
        "--steps", type=click.IntRange(min=1), default=None, help="Training steps (preset default)."
    )
    @click.option(
        "--concepts",
        "n_concepts",
        type=click.IntRange(min=1),
        default=None,
        help="Training concepts to mix (default: all).",
    )
    @click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None)
    def base(
        preset: str,
        out: Path,
        steps: int | None,
        n_concepts: int | None,
        batch_size: int,
        seed: int,
        photos: Path | None,
    ) -> None:
        """Pretrain the base generator on a mixture of training concepts (resumable)."""
        from denoised_weights.plugins.image_translation.training import train_base

        arch = _arch(preset)
        ids = training_concepts(n_concepts)
        steps = steps or BASE_STEPS.get(preset, 2500)
        train_base(
            arch,
            out,
            concepts=ids,
            steps=steps,
            batch_size=batch_size,
            seed=seed,
            photos_dir=photos,
        )
        info = (out / "base.json").read_text()
        import json

        click.echo(f"base model in {out} ({json.loads(info)['train_seconds']:.0f} s of training)")

    @cli.command()
    @click.option(
        "--pairs",
        "pairs_dir",
        required=True,
        type=click.Path(path_type=Path),
        help="Training pairs folder.",
    )
    @click.option(
        "--eval-pairs",
        type=click.Path(path_type=Path),
        default=None,
        help="Eval pairs folder (default: 10% of --pairs).",
    )
    @click.option("--prompt", required=True, help="The concept's text.")
    @click.option(
        "--init",
        "init",
        default="standard",
        show_default=True,
        help="scratch | standard | generated | mean | nearest | noisy-nearest | fine.",
    )
    @click.option(
        "--base",
        type=click.Path(path_type=Path),
        default=None,
        help="Base model folder (all inits but scratch).",
    )
    @click.option(
        "--generator",
        "-g",
        type=click.Path(path_type=Path),
        default=None,
        help="Generator folder (--init generated).",
    )
    @click.option(
        "--data",
        type=click.Path(path_type=Path),
        default=None,
        help="Weight dataset (--init mean, nearest, noisy-nearest, fine).",
    )
    @click.option("--preset", "-p", default="small", show_default=True, help="e2gan preset.")
    @click.option("--max-steps", type=click.IntRange(min=1), default=600, show_default=True)
    @click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True)
    @click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
    @click.option(
        "--lr",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Adam lr (2e-4 full, 1e-3 LoRA).",
    )
    @click.option(
        "--metrics",
        default="l1,psnr,ssim,lpips,fid",
        show_default=True,
        help="Comma-separated metrics.",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
    def finetune(
        pairs_dir: Path, eval_pairs: Path | None, prompt: str, init: str, base: Path | None,
        generator: Path | None, data: Path | None, preset: str,
        max_steps: int, eval_every: int, batch_size: int, lr: float | None, metrics: str, seed: int, out: Path,
    ) -> None:  # fmt: skip
        """Train a translator for one concept from scratch or from a base + LoRA init (resumable)."""
        from denoised_weights.plugins.image_translation.pairs import FolderPairs
        from denoised_weights.plugins.image_translation.training import finetune as run_finetune

        arch = _arch(preset)
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        from denoised_weights.core.plugins import default_registries

        for name in names:
            default_registries().metrics.get(name)  # unknown metric: one-line error before any work
        initialiser = make_initialiser(init, generator=generator, data=data)
        source = FolderPairs(pairs_dir, arch.image_size)
        if eval_pairs is None:
            train, held = source.pairs(split="train"), source.pairs(split="eval")
        else:
            train, held = source.all_pairs(), FolderPairs(eval_pairs, arch.image_size).all_pairs()
        curve = run_finetune(
            arch, out, train_pairs=train, eval_pairs=held, prompt=prompt, init=init, base=base, initialiser=initialiser,
            max_steps=max_steps, eval_every=eval_every, batch_size=batch_size, seed=seed, lr=lr, metrics=names,
        )  # fmt: skip
        first, last = curve["points"][0], curve["points"][-1]
        click.echo(
            f"{init}: l1 {first['l1']:.4f} -> {last['l1']:.4f} in {last['step']} steps "
            f"({last['train_seconds']:.1f} s); outputs in {out}"
        )

    @cli.command()
    @click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path("runs/demo"),
        show_default=True,
    )
    @click.option(
        "--from-scratch",
        is_flag=True,
        help="Build base, dataset and generator here instead of using the pretrained pack.",
    )
    @click.option(
        "--preset",
        "-p",
        type=click.Choice(["demo", "smoke"]),
        default="demo",
        show_default=True,
        help="Sizes when building (smoke: toy sizes, a quick check; never uses the pack).",
    )
    @click.option(
        "--concepts",
        "n_concepts",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Held-out concepts.",
    )
    @click.option("--inits", default="scratch,standard,generated", show_default=True)
    @click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Step budget (preset default).")  # fmt: skip
    @click.option("--seed", type=int, default=0, show_default=True)
    def demo(
        workdir: Path, from_scratch: bool, preset: str, n_concepts: int, inits: str, max_steps: int | None, seed: int
    ) -> None:  # fmt: skip
        """The main job: a base and a generator (pretrained or built here, resumable), then
        unseen concepts fine-tuned from every init, with the headline table and plots."""
        from denoised_weights.plugins.image_translation.benchmark import (
            BenchmarkSpec,
            headline_table,
            held_out_concepts,
            run_benchmark,
        )
        from denoised_weights.pretrained import shipped_pack

        pack = None if from_scratch or preset != "demo" else shipped_pack()
        if pack is not None:
            click.echo(f"using the pretrained pack in {pack} (--from-scratch rebuilds everything)")
        else:
            click.echo(f"building base, weight dataset and generator in {workdir} (resumable)")
        spec = BenchmarkSpec(
            preset=preset, out=workdir, base=pack / "base" if pack else None,
            generator=pack / "generator" if pack else None, concepts=held_out_concepts(n_concepts),
            inits=tuple(i.strip() for i in inits.split(",") if i.strip()), max_steps=max_steps, seed=seed,
            workers=2,
        )  # fmt: skip
        results = run_benchmark(spec, echo=click.echo)
        click.echo(headline_table(results))
        click.echo(
            f"report: {workdir / 'report.md'}; plots: {workdir / 'plots'}; image grids: {workdir / 'grids'}"
        )


def add_compare_command(cli: click.Group) -> None:
    @cli.command()
    @click.option("--concept", "-c", default=None, help="Catalogue concept id or prompt.")
    @click.option(
        "--pairs",
        "pairs_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="Or a pairs folder (A/ and B/).",
    )
    @click.option("--prompt", default=None, help="Prompt for --pairs (default: the folder name).")
    @click.option(
        "--base", required=True, type=click.Path(path_type=Path), help="Base model folder."
    )
    @click.option(
        "--inits", default="scratch,standard", show_default=True, help="Comma-separated inits."
    )
    @click.option("--generator", "-g", type=click.Path(path_type=Path), default=None)
    @click.option("--data", type=click.Path(path_type=Path), default=None)
    @click.option("--preset", "-p", default="small", show_default=True)
    @click.option("--max-steps", type=click.IntRange(min=1), default=600, show_default=True)
    @click.option("--eval-every", type=click.IntRange(min=1), default=50, show_default=True)
    @click.option("--metrics", default="l1,psnr,ssim,lpips,fid", show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option(
        "--workdir", "-o", required=True, type=click.Path(file_okay=False, path_type=Path)
    )
    def compare(
        concept: str | None, pairs_dir: Path | None, prompt: str | None, base: Path, inits: str,
        generator: Path | None, data: Path | None, preset: str, max_steps: int, eval_every: int, metrics: str,
        seed: int, workdir: Path,
    ) -> None:  # fmt: skip
        """Fine-tune one task from several inits (same data, steps, evaluation) and tabulate."""
        from denoised_weights.core.errors import DnwError
        from denoised_weights.plugins.image_translation.experiments import (
            compare_inits,
            format_table,
        )

        if (concept is None) == (pairs_dir is None):
            raise DnwError("give exactly one of --concept and --pairs")
        names = [i.strip() for i in inits.split(",") if i.strip()]
        initialisers = {n: make_initialiser(n, generator=generator, data=data) for n in names}
        result = compare_inits(
            _arch(preset), workdir, concept=concept, pairs_dir=pairs_dir, prompt=prompt, base=base, inits=names,
            initialisers=initialisers, max_steps=max_steps, eval_every=eval_every, seed=seed,
            metrics=[m.strip() for m in metrics.split(",") if m.strip()],
        )  # fmt: skip
        click.echo(format_table([result]))


def demo_concepts(n: int) -> list[str]:
    """A fixed, spread-out choice of held-out concepts."""
    from denoised_weights.plugins.image_translation.concepts import concepts

    held = [c.id for c in concepts("held-out")]
    step = max(1, len(held) // n)
    return held[::step][:n]


def add_collect_commands(cli: click.Group) -> None:
    from denoised_weights.cli import echo_json

    @cli.command()
    @click.option(
        "--base",
        required=True,
        type=click.Path(path_type=Path),
        help="Base model folder (dnw base).",
    )
    @click.option(
        "--out",
        "-o",
        required=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="Dataset folder.",
    )
    @click.option(
        "--preset",
        "-p",
        default="small",
        show_default=True,
        help="e2gan preset (must match the base).",
    )
    @click.option(
        "--concepts",
        "n_concepts",
        type=click.IntRange(min=1),
        default=None,
        help="First N training concepts (spread over the catalogue).",
    )
    @click.option(
        "--max-primitives",
        type=click.IntRange(min=1, max=3),
        default=None,
        help="Only concepts of at most this many edits (1: every single edit at every train value).",
    )
    @click.option(
        "--split",
        type=click.Choice(["train"]),
        default="train",
        show_default=True,
        help="Only training concepts are ever collected.",
    )
    @click.option(
        "--checkpoints",
        "-k",
        type=click.IntRange(min=1),
        default=4,
        show_default=True,
        help="Checkpoints kept per concept.",
    )
    @click.option(
        "--max-steps",
        type=click.IntRange(min=1),
        default=400,
        show_default=True,
        help="Step budget before keeping checkpoints.",
    )
    @click.option("--eval-every", type=click.IntRange(min=1), default=25, show_default=True)
    @click.option(
        "--interval",
        type=click.IntRange(min=1),
        default=25,
        show_default=True,
        help="Steps between kept checkpoints.",
    )
    @click.option(
        "--shard", default=None, help="Collect only part i of n (i/n), e.g. one machine of several."
    )
    @click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Processes on this machine.",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None)
    def collect(
        base: Path, out: Path, preset: str, n_concepts: int | None, max_primitives: int | None, split: str, checkpoints: int, max_steps: int,
        eval_every: int, interval: int, shard: str | None, workers: int, seed: int, photos: Path | None,
    ) -> None:  # fmt: skip
        """Train a LoRA per training concept from the base; keep K checkpoints (resumable, shardable)."""
        from denoised_weights.plugins.image_translation.collect import (
            CollectOptions,
            parse_shard,
        )
        from denoised_weights.plugins.image_translation.collect import (
            collect as run_collect,
        )

        arch = _arch(preset)
        ids = training_concepts(n_concepts, max_primitives)
        opts = CollectOptions(
            checkpoints=checkpoints,
            max_steps=max_steps,
            eval_every=eval_every,
            interval=interval,
            seed=seed,
        )
        dataset = run_collect(
            arch, base, out, concept_ids=ids, opts=opts, preset=preset, shard=parse_shard(shard), workers=workers,
            photos_dir=photos,
        )  # fmt: skip
        info = dataset.info()
        click.echo(f"{info['concepts']} concepts, {info['entries']} entries in {out}")

    @cli.group()
    def dataset() -> None:
        """Inspect weight datasets."""

    @dataset.command(name="info")
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    def dataset_info(path: Path, as_json: bool) -> None:
        """Counts, fingerprint and size of a weight dataset."""
        from denoised_weights.core.dataset import WeightDataset

        info = WeightDataset(path).info()
        if as_json:
            echo_json(info)
            return
        for key, value in info.items():
            click.echo(f"{key}: {value}")

    @dataset.command(name="verify")
    @click.argument("path", type=click.Path(path_type=Path))
    def dataset_verify(path: Path) -> None:
        """Check every shard is readable and matches the manifest (non-zero exit otherwise)."""
        from denoised_weights.core.dataset import WeightDataset
        from denoised_weights.core.errors import DnwError

        ds = WeightDataset(path)
        problems = ds.verify()
        if problems:
            for p in problems[:20]:
                click.echo(p, err=True)
            raise DnwError(f"{path}: {len(problems)} problem(s) found")
        click.echo(f"ok: {len(ds.concepts)} concepts, {len(ds.entries)} entries")


def make_initialiser(init: str, *, generator: Path | None = None, data: Path | None = None):
    """The registered initialiser behind ``--init`` (None for scratch and standard)."""
    from denoised_weights.core.errors import DnwError
    from denoised_weights.core.plugins import default_registries

    if init in ("scratch", "standard"):
        return None
    registry = default_registries().generators
    registry.get(init)  # unknown: a one-line error listing what exists
    if init == "generated":
        if generator is None:
            raise DnwError("--init generated needs --generator DIR (made by 'dnw fit')")
        return registry.create(init, path=generator)
    if data is None:
        raise DnwError(f"--init {init} needs --data DIR (a weight dataset made by 'dnw collect')")
    return registry.create(init, data=data)


def training_concepts(n: int | None, max_primitives: int | None = None) -> list[str]:
    """Training concept ids (those of at most ``max_primitives`` edits), all of them or N spread
    evenly over the catalogue."""
    from denoised_weights.plugins.image_translation.concepts import concepts

    ids = [
        c.id for c in concepts("train") if max_primitives is None or len(c.steps) <= max_primitives
    ]
    if n is None or n >= len(ids):
        return ids
    return [ids[round(i * len(ids) / n)] for i in range(n)]


def add_benchmark_command(cli: click.Group) -> None:
    from denoised_weights.plugins.image_translation.benchmark import BENCH_PRESETS, INITS

    @cli.command()
    @click.option(
        "--preset", "-p", type=click.Choice(list(BENCH_PRESETS)), default="small", show_default=True
    )
    @click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--base", type=click.Path(path_type=Path), default=None, help="Reuse a base (dnw base).")  # fmt: skip
    @click.option("--data", type=click.Path(path_type=Path), default=None, help="Reuse a weight dataset (dnw collect).")  # fmt: skip
    @click.option("--generator", "-g", type=click.Path(path_type=Path), default=None, help="Reuse a generator (dnw fit).")  # fmt: skip
    @click.option("--concepts", default=None, help="Comma-separated held-out concept ids (preset default: a spread-out choice).")  # fmt: skip
    @click.option("--seeds", type=click.IntRange(min=1), default=None, help="Seeds per concept (preset default).")  # fmt: skip
    @click.option("--inits", default=",".join(INITS), show_default=True)
    @click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Step budget (preset default).")  # fmt: skip
    @click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes for collection and fine-tuning (cores/W threads each).")  # fmt: skip
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--photos", type=click.Path(file_okay=False, path_type=Path), default=None)
    @click.option(
        "--step0-only",
        is_flag=True,
        help="Only the step-0 table: every init on every held-out concept (or --concepts), no fine-tuning.",
    )
    def benchmark(
        preset: str, out: Path, base: Path | None, data: Path | None, generator: Path | None, concepts: str | None,
        seeds: int | None, inits: str, max_steps: int | None, workers: int, seed: int, photos: Path | None,
        step0_only: bool,
    ) -> None:  # fmt: skip
        """Every init on held-out concepts: speed-ups to scratch's final quality (resumable)."""
        from denoised_weights.plugins.image_translation.benchmark import (
            BenchmarkSpec,
            headline_table,
            run_benchmark,
            step0_table,
        )

        spec = BenchmarkSpec(
            preset=preset, out=out, base=base, data=data, generator=generator,
            concepts=[c.strip() for c in concepts.split(",") if c.strip()] if concepts else None,
            seeds=seeds, inits=tuple(i.strip() for i in inits.split(",") if i.strip()), max_steps=max_steps,
            workers=workers, seed=seed, photos_dir=photos, step0_only=step0_only,
        )  # fmt: skip
        results = run_benchmark(spec, echo=click.echo)
        if step0_only:
            click.echo(step0_table(results["step0"]))
            click.echo(f"per-concept values: {out / 'step0.json'}")
            return
        click.echo(headline_table(results))
        click.echo(f"results.json, report.md, plots/ and grids/ in {out}")

    @cli.command()
    @click.option("--base", required=True, type=click.Path(path_type=Path), help="Base model folder (dnw base).")  # fmt: skip
    @click.option("--generator", "-g", required=True, type=click.Path(path_type=Path), help="Generator folder (dnw fit).")  # fmt: skip
    @click.option("--data", type=click.Path(path_type=Path), default=None, help="Its weight dataset (figures for the provenance).")  # fmt: skip
    @click.option("--results", type=click.Path(path_type=Path), default=None, help="A results.json to quote in the provenance.")  # fmt: skip
    @click.option(
        "--out",
        "-o",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Pack folder (default: the one shipped in the package source).",
    )
    def pack(base: Path, generator: Path, data: Path | None, results: Path | None, out: Path | None) -> None:  # fmt: skip
        """Write a pretrained pack (base + generator, at most 20 MiB) with its provenance."""
        from denoised_weights.pretrained import SHIPPED, build_pack

        target = out or SHIPPED
        info = build_pack(base, generator, target, data=data, results=results)
        click.echo(
            f"pack in {target}: {info['size_bytes'] / 2**20:.1f} MiB, commit {info['commit']}"
        )
