"""``dnw serve``: a local web app (Gradio, the optional ``app`` extra) to try translators.

Type a concept prompt and the generated LoRA init is applied to a photo at once (a bundled
photo or an upload, before / after). Uploaded A/B example pairs of the edit condition the
generation too when the generator reads examples (``dnw fit --conditioning examples|both``);
an examples-only generator waits for them. Pick a catalogue concept or use the uploaded pairs
and fine-tune from the generated init with a live quality-vs-step plot (and scratch's and
standard's curves beside it if asked); download the adapter, the merged safetensors and the
ONNX file. Everything goes through the public calls (``api.generate``, ``api.finetune``, the
plugin's ``load_translator`` and ``export``). Each browser session writes into its own folder
under ``--workdir`` (default: a temporary folder), each run into its own subfolder, so two
tabs never share a run. Fine-tunes run in a child process (one torch thread), so Stop ends
them at once. The server binds 127.0.0.1 unless ``--host`` says otherwise.
"""

# no ``from __future__ import annotations``: Gradio finds the ``gr.Request`` parameters of the
# page's functions by their evaluated annotations
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cached_property
from pathlib import Path
from typing import Any

from denoised_weights.core.errors import DnwError

DEFAULT_PROMPT = "moderate sepia toning at 50%"
DEFAULT_CONCEPT = "gamma-2.2"
#: the longer side of the photos the page shows (the translation runs on this copy)
SHOW_SIDE = 512
INITS = ("generated", "standard", "scratch")
POLL_SECONDS = 0.5


def _need_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError:
        raise DnwError("dnw serve needs Gradio: pip install 'denoised-weights[app]'") from None
    return gr


# -- the work, without any Gradio --------------------------------------------------------------
def finetune_worker(jobs_file: str | Path) -> None:
    """The child process (``python -m ...serve JOBS.json``): ``api.finetune`` for each job of
    the file in turn, with one torch thread."""
    import json

    import torch

    from denoised_weights import api

    torch.set_num_threads(1)
    for job in json.loads(Path(jobs_file).read_text()):
        api.finetune(**job)


def curve_points(run: Path) -> list[dict[str, Any]]:
    """The evaluations of a fine-tune so far: its finished curve, else its last checkpoint."""
    for name in ("curve.json", "checkpoint/checkpoint.json"):
        try:
            return list(json.loads((run / name).read_text()).get("points", []))
        except (OSError, ValueError):
            continue
    return []


class Studio:
    """What the app does, per browser session, through the public API."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        base: str | Path | None = None,
        generator: str | Path | None = None,
        photos: str | Path | None = None,
        preset: str | None = None,
        registries: Any = None,
    ) -> None:
        from denoised_weights.plugins.image_translation.photos import list_photos

        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="dnw-serve-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base, self.generator_path, self.registries = base, generator, registries
        self.preset = preset
        self.photos = {p.name: p for p in list_photos(photos)}
        self._generator: Any = None
        self._lock = threading.Lock()
        self._procs: dict[str, Any] = {}
        self._landing: tuple | None = None
        self.warm = threading.Thread(target=self._warm_up, daemon=True)
        self.warm.start()

    def _warm_up(self) -> None:
        """At start-up: load the generator, and make the page's first preview (the default
        prompt on the first photo) so that it is there when a browser opens the page."""
        try:
            if self.needs_examples:
                return  # the first preview waits for the user's examples
            adapter, seconds = self.generate("landing", DEFAULT_PROMPT)
            name = next(iter(self.photos))
            before = self.photo(name)
            self._landing = (
                DEFAULT_PROMPT,
                name,
                adapter,
                seconds,
                before,
                self.apply(adapter, before),
            )
        except Exception:  # the page then makes its first preview itself
            self._landing = None

    def landing(
        self, prompt: str, photo: str | None, upload: Any, pairs: Path | None = None
    ) -> tuple | None:
        """The start-up preview when it is what is asked for (waits for the warm-up)."""
        if (
            upload is not None
            or pairs is not None
            or prompt != DEFAULT_PROMPT
            or photo not in (None, next(iter(self.photos)))
        ):
            return None
        self.warm.join()
        return self._landing

    # the generator is loaded once (in the background at start-up) and shared
    def _load_generator(self) -> Any:
        with self._lock:
            if self._generator is None:
                from denoised_weights.generators.diffusion import DiffusionGenerator
                from denoised_weights.pipeline.pack import default_generator

                self._generator = DiffusionGenerator(
                    self.generator_path or default_generator(), registries=self.registries
                )
                if self._generator.conditioner.reads_text:
                    self._generator.generate("warm-up")  # tokenizer, kernels
            return self._generator

    def session_dir(self, session: str) -> Path:
        safe = "".join(c for c in (session or "local") if c.isalnum() or c in "-_")[:64]
        path = self.workdir / (safe or "local")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def new_run(self, session: str, kind: str) -> Path:
        return (
            self.session_dir(session) / f"{kind}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
        )

    def photo(self, name: str | None, upload: Any = None) -> Any:
        """The photo to show (an upload wins), shrunk to :data:`SHOW_SIDE`, as Pillow RGB."""
        from PIL import Image, ImageOps

        if upload is not None:
            img = ImageOps.exif_transpose(upload).convert("RGB")
        else:
            photo = self.photos.get(name or "") or next(iter(self.photos.values()))
            img = Image.fromarray(photo.load())
        img.thumbnail((SHOW_SIDE, SHOW_SIDE), Image.Resampling.LANCZOS)
        return img

    @property
    def needs_examples(self) -> bool:
        """Whether the generator reads only examples (then nothing is generated without)."""
        return self.conditioning == "examples"

    @cached_property
    def conditioning(self) -> str:
        """What the generator reads: ``text``, ``examples`` or ``both`` (from its folder,
        read once, without loading it)."""
        from denoised_weights.core.io import read_json
        from denoised_weights.generators.conditioning import CONFIG
        from denoised_weights.pipeline.pack import default_generator

        config = Path(self.generator_path or default_generator()) / CONFIG
        return str(read_json(config).get("mode", "text")) if config.is_file() else "text"

    def generate(self, session: str, prompt: str, pairs: Path | None = None) -> tuple[Path, float]:
        """``api.generate`` with the shared generator into a new run folder of the session,
        conditioned on the example ``pairs`` (a pix2pix folder) when the generator reads
        examples."""
        from denoised_weights import api

        gen = self._load_generator()
        pairs = pairs if gen.reads_examples else None
        out = self.new_run(session, "generated")
        with self._lock:  # the tokenizer is not thread-safe
            result = api.generate(
                prompt, out, generator=gen, pairs=pairs, registries=self.registries
            )
        return out, result["generation_seconds"]

    def apply(self, adapter: str | Path, image: Any) -> Any:
        """The adapter on the base applied to a Pillow image (same size)."""
        from denoised_weights.plugins.image_translation.translate import load_translator

        translator = load_translator(self.base, adapter, registries=self.registries)
        return translator.translate_pil(image)

    def start_finetune(
        self,
        session: str,
        *,
        concept: str | None,
        pairs: Path | None,
        prompt: str,
        steps: int,
        eval_every: int,
        compare: bool,
        adapter_seed: int = 0,
    ) -> tuple[Path, list[str]]:
        """Start the fine-tunes of one run in a child process; ``(run folder, inits)``."""
        self.stop(session)
        run = self.new_run(session, "finetune")
        inits = list(INITS if compare else INITS[:1])
        common = {
            "concept": concept,
            "pairs": str(pairs) if pairs else None,
            "prompt": prompt or None,
            "max_steps": steps,
            "eval_every": eval_every,
            "n_train": 128,
            "n_eval": 32,
            "metrics": ["l1"],
            "base": str(self.base) if self.base else None,
            "preset": self.preset,
            "generator": str(self.generator_path) if self.generator_path else None,
            "seed": adapter_seed,
        }
        jobs = [{**common, "out": str(run / init), "init": init} for init in inits]
        for job in jobs:
            if job["init"] != "generated":
                job.pop("generator")
        run.mkdir(parents=True)
        (run / "jobs.json").write_text(json.dumps(jobs, indent=2))
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        log = open(run / "log.txt", "wb")  # noqa: SIM115 - the child writes it while it runs
        self._procs[session] = subprocess.Popen(
            [sys.executable, "-m", __name__, str(run / "jobs.json")],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        return run, inits

    def running(self, session: str) -> bool:
        proc = self._procs.get(session)
        return proc is not None and proc.poll() is None

    def exit_code(self, session: str) -> int | None:
        proc = self._procs.get(session)
        return None if proc is None else proc.poll()

    def stop(self, session: str) -> bool:
        """End the session's running fine-tune; whether one was running."""
        proc = self._procs.pop(session, None)
        if proc is None or proc.poll() is not None:
            return False
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        return True

    def close(self) -> None:
        for session in list(self._procs):
            self.stop(session)
        if self._tmp is not None:
            self._tmp.cleanup()

    def export(self, session: str, adapter: str | Path, fmt: str) -> Path:
        """The adapter as a zip, or merged into the base as safetensors or ONNX."""
        out = self.new_run(session, f"export-{fmt}")
        if fmt == "adapter":
            out.mkdir(parents=True)
            return Path(shutil.make_archive(str(out / "adapter"), "zip", str(adapter)))
        from denoised_weights.plugins.image_translation.export import export

        report = export(
            out / f"translator.{fmt}",
            base=self.base,
            adapter=adapter,
            format=fmt,
            n_check=4,
            registries=self.registries,
        )
        return Path(report["file"])


def save_pairs(folder: Path, a_files: list[Any], b_files: list[Any]) -> Path:
    """Uploaded A and B images (paired in name order) as a pix2pix folder."""
    if not a_files or not b_files or len(a_files) != len(b_files):
        raise DnwError("upload as many B images as A images (paired in name order)")
    for side, files in (("A", a_files), ("B", b_files)):
        (folder / side).mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(sorted(files, key=lambda p: Path(_path(p)).name)):
            src = Path(_path(f))
            shutil.copy(src, folder / side / f"{i:05d}{src.suffix.lower() or '.png'}")
    return folder


def _path(f: Any) -> str:
    return f if isinstance(f, str) else getattr(f, "name", str(f))


# -- the page ----------------------------------------------------------------------------------
def build_app(studio: Studio) -> Any:
    """The Gradio Blocks of the app (not launched)."""
    gr = _need_gradio()
    import pandas as pd

    from denoised_weights.plugins.image_translation.concepts import catalogue

    concepts = [(f"{c.id} — {c.prompts[0]}", c.id) for c in catalogue()]
    names = list(studio.photos)

    def session_of(request: gr.Request | None) -> str:
        return getattr(request, "session_hash", None) or "local"

    def example_pairs(session: str, a_files: Any, b_files: Any) -> Path | None:
        """The uploaded example pairs as a pix2pix folder of the session (None without)."""
        if not (a_files or b_files):
            return None
        return save_pairs(studio.new_run(session, "pairs"), a_files or [], b_files or [])

    def paired(a_files: Any, b_files: Any) -> bool:
        return bool(a_files) and len(a_files) == len(b_files or [])

    def preview(
        prompt: str,
        photo: str,
        upload: Any,
        a_files: Any,
        b_files: Any,
        state: dict,
        request: gr.Request,
    ):
        t0 = time.perf_counter()
        prompt = (prompt or "").strip()
        session = session_of(request)
        try:
            gen = studio._load_generator()
            # the pairs condition a generator that reads examples; incomplete ones wait
            pairs = (
                example_pairs(session, a_files, b_files)
                if gen.reads_examples and paired(a_files, b_files)
                else None
            )
        except DnwError as exc:
            raise gr.Error(str(exc)) from None
        waiting = (
            " The example pairs are not used until there are as many B images as A images."
            if gen.reads_examples and (a_files or b_files) and pairs is None
            else ""
        )
        reads = pairs is not None
        if studio.needs_examples and pairs is None:
            before = studio.photo(photo, upload)
            note = (
                "This generator reads examples of the edit, not a prompt: upload A images "
                "and their B images (paired in name order) under *Examples of the edit*." + waiting
            )
            return (before, before), note, state
        if not prompt and not reads:
            raise gr.Error("Type a concept prompt first, e.g. 'a pencil sketch'.")
        ready = studio.landing(prompt, photo, upload, pairs)  # made at start-up: the first view
        if ready is not None:
            _, _, adapter, gen_seconds, before, after = ready
        else:
            try:
                adapter, gen_seconds = studio.generate(session, prompt, pairs)
            except DnwError as exc:
                raise gr.Error(str(exc)) from None
            before = studio.photo(photo, upload)
            after = studio.apply(adapter, before)
        n = len(list((pairs / "A").iterdir())) if pairs is not None else 0
        used = min(n, gen.conditioner.n_examples)
        read = [f"**{prompt}**"] if prompt and gen.conditioner.reads_text else []
        read += (
            [
                f"**{used} example pair{'s' if used != 1 else ''}**"
                + (f" (of {n})" if used < n else "")
            ]
            if reads
            else []
        )
        what = " and ".join(read)
        state = {**(state or {}), "adapter": str(adapter), "label": f"generated: {what}"}
        unused = (
            " This generator reads only the prompt; the example pairs are used when you fine-tune."
            if (a_files or b_files) and not gen.reads_examples
            else ""
        )
        note = (
            f"Generated init from {what} ({gen_seconds * 1000:.0f} ms to generate, "
            f"{time.perf_counter() - t0:.2f} s in all). Drag the slider: before | "
            f"after.{unused}{waiting}"
        )
        return (before, after), note, state

    def when_paired(prompt, photo, upload, a_files, b_files, state, request: gr.Request):
        """A new preview once as many B images as A images are uploaded (for a generator
        that reads them)."""
        if studio.conditioning == "text" or not paired(a_files, b_files):
            return gr.skip(), gr.skip(), gr.skip()
        return preview(prompt, photo, upload, a_files, b_files, state, request)

    def plot_frame(run: Path, inits: list[str]) -> Any:
        rows = [
            {"step": p["step"], "l1": p.get("l1"), "init": init}
            for init in inits
            for p in curve_points(run / init)
            if p.get("l1") is not None
        ]
        frame = pd.DataFrame(rows, columns=["step", "l1", "init"])  # numbers: a quantitative axis
        return frame.astype({"step": "int64", "l1": "float64", "init": "str"})

    def finetune(
        concept, prompt, a_files, b_files, steps, compare, photo, upload, state, request: gr.Request
    ) -> Iterator[tuple]:
        session = session_of(request)
        code = None
        try:
            pairs = example_pairs(session, a_files, b_files)
        except DnwError as exc:
            raise gr.Error(str(exc)) from None
        if pairs is not None:
            concept = None
            prompt = (prompt or "").strip()
            if studio.needs_examples and prompt in ("", DEFAULT_PROMPT):
                prompt = "uploaded pairs"  # only a name: this generator reads the pairs
            elif prompt in ("", DEFAULT_PROMPT):
                raise gr.Error(
                    "Say in the prompt what your uploaded pairs show (it still holds the "
                    "sample prompt): the generated init is made from it."
                )
        elif not concept:
            raise gr.Error("Pick a catalogue concept or upload A/B pairs.")
        else:
            prompt = ""  # a catalogue concept brings its own prompt
        steps = int(steps)
        every = max(1, steps // 10)
        run, inits = studio.start_finetune(
            session,
            concept=concept,
            pairs=pairs,
            prompt=(prompt or "").strip(),
            steps=steps,
            eval_every=every,
            compare=bool(compare),
        )
        what = concept or f"{pairs} ({(prompt or '').strip()})"
        try:
            shown = -1
            while studio.running(session):
                done = {
                    i: max((p["step"] for p in curve_points(run / i)), default=-1) for i in inits
                }
                status = ", ".join(
                    f"{i}: step {s if s >= 0 else '…'}/{steps}" for i, s in done.items()
                )
                frame = plot_frame(run, inits)
                # redraw only when a point came, and never with no point (Gradio's plot then
                # stays blank)
                changed = len(frame) not in (shown, 0)
                shown = len(frame)
                yield (
                    frame if changed else gr.skip(),
                    f"Fine-tuning {what}: {status}",
                    gr.skip(),
                    state,
                )
                time.sleep(POLL_SECONDS)
            code = studio.exit_code(session)
        finally:
            studio.stop(session)  # the page went away or Stop was pressed: end the child too
        adapter = run / "generated" / "adapter"
        if code is None:  # Stop was pressed
            frame = plot_frame(run, inits)
            yield frame if len(frame) else gr.skip(), "Stopped.", gr.skip(), state
            return
        if code != 0 or not adapter.is_dir():
            frame = plot_frame(run, inits)
            yield (
                frame if len(frame) else gr.skip(),
                f"The fine-tune failed (exit code {code}); see {run / 'log.txt'}.",
                gr.skip(),
                state,
            )
            return
        before = studio.photo(photo, upload)
        state = {**(state or {}), "adapter": str(adapter), "label": f"fine-tuned: {what}"}
        last = {i: curve_points(run / i)[-1].get("l1") for i in inits if curve_points(run / i)}
        summary = ", ".join(f"{i} {v:.4f}" for i, v in last.items() if v is not None)
        yield (
            plot_frame(run, inits),
            f"Done: final eval L1 {summary}. Before | after below.",
            (before, studio.apply(adapter, before)),
            state,
        )

    def stop(request: gr.Request):
        return "Stopped." if studio.stop(session_of(request)) else "Nothing was running."

    def download(fmt: str, state: dict, request: gr.Request, progress=gr.Progress()):
        adapter = (state or {}).get("adapter")
        if not adapter:
            raise gr.Error("Generate or fine-tune a translator first.")
        progress(0.1, desc=f"exporting {fmt}")
        try:
            path = studio.export(session_of(request), adapter, fmt)
        except DnwError as exc:
            raise gr.Error(str(exc)) from None
        return str(
            path
        ), f"{fmt}: {path.name} ({path.stat().st_size / 2**20:.2f} MiB) of {state['label']}"

    with gr.Blocks(title="denoised-weights") as app:
        state = gr.State({})
        gr.Markdown(
            "## denoised-weights: an image translator from a prompt, in seconds\n"
            "Type a concept; the diffusion model generates the LoRA, applied to the photo at "
            "once. Fine-tune it below, then download it."
        )
        with gr.Row():
            with gr.Column(scale=2):
                prompt = gr.Textbox(
                    label="Concept prompt",
                    value=DEFAULT_PROMPT,
                    lines=1,
                    elem_id="prompt",
                    submit_btn="Generate",
                )
                photo = gr.Dropdown(names, value=names[0], label="Photo")
                upload = gr.Image(type="pil", label="…or your own photo", height=160)
                needed = studio.needs_examples
                with gr.Accordion(
                    "Examples of the edit" + ("" if needed else " (optional)"), open=needed
                ):
                    gr.Markdown(
                        "Photos before (A) and after (B) the edit, paired in name order. A "
                        "generator that reads examples conditions on them; Fine-tune trains "
                        "on them (with the prompt above)."
                    )
                    with gr.Row():
                        a_files = gr.File(
                            file_count="multiple", file_types=["image"], label="A images"
                        )
                        b_files = gr.File(
                            file_count="multiple", file_types=["image"], label="B images"
                        )
                note = gr.Markdown(elem_id="note")
            with gr.Column(scale=3):
                slider = gr.ImageSlider(
                    type="pil", label="before | after", elem_id="preview", height=420
                )
        with gr.Accordion("Fine-tune from the generated init", open=True), gr.Row():
            with gr.Column():
                concept = gr.Dropdown(
                    concepts,
                    value=DEFAULT_CONCEPT,
                    label="Catalogue concept (uploaded example pairs take its place)",
                )
                steps = gr.Slider(10, 400, value=50, step=10, label="Steps")
                compare = gr.Checkbox(label="Also scratch and standard, for comparison")
                with gr.Row():
                    start = gr.Button("Fine-tune", variant="primary")
                    halt = gr.Button("Stop")
            with gr.Column():
                plot = gr.LinePlot(
                    x="step",
                    y="l1",
                    color="init",
                    title="eval L1 (lower is better)",
                    x_title="step",
                    y_title="L1",
                    height=300,
                    elem_id="curve",
                )
                ft_note = gr.Markdown(
                    "Pick a concept (or upload pairs), then Fine-tune.", elem_id="ft-note"
                )
        with gr.Row():
            dl_adapter = gr.Button("Adapter (.zip)")
            dl_st = gr.Button("Merged .safetensors")
            dl_onnx = gr.Button("ONNX")
        files = gr.File(label="Download")
        dl_note = gr.Markdown()

        inputs = [prompt, photo, upload, a_files, b_files, state]
        outputs = [slider, note, state]
        prompt.submit(preview, inputs, outputs, api_name="preview", concurrency_limit=2)
        for event in (photo.change, upload.upload):
            event(preview, inputs, outputs, api_visibility="private", concurrency_limit=2)
        for event in (a_files.upload, b_files.upload):  # once both sides are there
            event(when_paired, inputs, outputs, api_visibility="private", concurrency_limit=2)
        for event in (a_files.clear, b_files.clear):  # the preview forgets them
            event(preview, inputs, outputs, api_visibility="private", concurrency_limit=2)
        app.load(preview, inputs, outputs, api_visibility="private", concurrency_limit=2)
        job = start.click(
            finetune,
            [concept, prompt, a_files, b_files, steps, compare, photo, upload, state],
            [plot, ft_note, slider, state],
            api_name="finetune",
            concurrency_limit=4,
        )
        halt.click(stop, None, ft_note, cancels=[job], api_name="stop")
        for button, fmt in ((dl_adapter, "adapter"), (dl_st, "safetensors"), (dl_onnx, "onnx")):
            button.click(
                _bind(download, fmt), [state], [files, dl_note], api_name=f"download_{fmt}"
            )
    return app


def _bind(fn: Callable, fmt: str) -> Callable:
    import gradio as gr

    def call(state: dict, request: gr.Request, progress=gr.Progress()):
        return fn(fmt, state, request, progress)

    return call


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    workdir: str | Path | None = None,
    base: str | Path | None = None,
    generator: str | Path | None = None,
    photos: str | Path | None = None,
    preset: str | None = None,
    registries: Any = None,
    echo: Callable[[str], None] = print,
    block: bool = True,
) -> tuple[Any, Studio]:
    """Build and launch the app; blocks until interrupted unless ``block`` is False
    (then returns ``(app, studio)``; close both when done)."""
    import torch

    _need_gradio()
    torch.set_num_threads(1)
    studio = Studio(
        workdir, base=base, generator=generator, photos=photos, preset=preset, registries=registries
    )
    app = build_app(studio)
    app.queue(default_concurrency_limit=2)
    try:
        app.launch(
            server_name=host,
            server_port=port,
            prevent_thread_lock=True,
            quiet=True,
            show_error=True,
            allowed_paths=[str(studio.workdir)],
        )
    except OSError as exc:
        studio.close()
        raise DnwError(f"cannot listen on {host}:{port} ({exc}); choose another --port") from None
    echo(f"dnw serve: open {app.local_url} (runs under {studio.workdir}; Ctrl-C stops)")
    if not block:
        return app, studio
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        echo("stopping")
    finally:
        app.close()
        studio.close()
    return app, studio


if __name__ == "__main__":
    finetune_worker(sys.argv[1])
