"""dnw serve: the app through gradio_client (tiny base and generator), and one slow check that
drives headless Chromium to the page (the shipped pack), types a prompt and looks at it."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio")
pytest.importorskip("gradio_client")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory, tiny_base, tiny_generator):
    from denoised_weights.plugins.image_translation.serve import serve

    workdir = tmp_path_factory.mktemp("serve")
    app, studio = serve(
        port=_free_port(),
        workdir=workdir,
        base=tiny_base,
        generator=tiny_generator,
        preset="tiny",
        block=False,
        echo=lambda _: None,
    )
    yield app, studio, workdir
    app.close()
    studio.close()


def _client(app):
    from gradio_client import Client

    return Client(app.local_url, verbose=False)


def test_bound_to_localhost_only(tiny_app):
    app, _, _ = tiny_app
    assert app.local_url.startswith("http://127.0.0.1:")
    assert app.server_name == "127.0.0.1"


def test_preview_and_download(tiny_app):
    app, _, _ = tiny_app
    client = _client(app)
    (before, after), note = client.predict(
        "strong sepia toning", "skimage/chelsea", None, None, None, api_name="/preview"
    )
    a, b = Image.open(before), Image.open(after)
    assert a.size == b.size == (451, 300)  # chelsea, under the 512 shown
    assert "strong sepia toning" in note
    path, message = client.predict(api_name="/download_adapter")
    assert Path(path).name == "adapter.zip" and "adapter" in message
    st, _ = client.predict(api_name="/download_safetensors")
    assert Path(st).suffix == ".safetensors" and Path(st).stat().st_size > 0


def test_two_sessions_keep_their_own_runs(tiny_app):
    app, _, workdir = tiny_app
    clients = [_client(app), _client(app)]
    results: list = [None, None]

    def go(i):
        results[i] = clients[i].predict(
            f"prompt number {i}", "skimage/coffee", None, None, None, api_name="/preview"
        )

    threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert (
        all(results) and "prompt number 0" in results[0][1] and "prompt number 1" in results[1][1]
    )
    sessions = [c.session_hash for c in clients]
    for i, session in enumerate(sessions):
        runs = list((workdir / session).glob("generated-*"))
        assert runs, session
        import json

        prompts = {json.loads((r / "dnw_adapter.json").read_text())["prompt"] for r in runs}
        assert prompts == {f"prompt number {i}"}


def _pairs(folder: Path, concept: str, n: int = 4) -> tuple[list, list]:
    """``n`` example pairs of a catalogue concept as files, in gradio_client's upload form."""
    from gradio_client import handle_file

    import denoised_weights as dnw
    from denoised_weights.plugins.image_translation.pairs import write_pairs

    task = dnw.create_task("image-translation")
    arch = dnw.create_architecture("e2gan", "tiny")
    data = task.make_data(task.get_concept(concept), arch=arch, split="train", n=n, seed=0)
    write_pairs(folder, data["A"], data["B"])
    return tuple(
        [handle_file(str(f)) for f in sorted((folder / side).glob("*.png"))] for side in "AB"
    )


def test_uploaded_pairs_with_a_prompt_generator(tiny_app, tmp_path):
    from gradio_client.exceptions import AppError

    app, _, _ = tiny_app
    client = _client(app)
    a, b = _pairs(tmp_path / "sepia", "sepia-0.8")
    _, note = client.predict(
        "strong sepia toning", "skimage/chelsea", None, a, b, api_name="/preview"
    )
    assert "reads only the prompt" in note and "strong sepia toning" in note
    _, note = client.predict(  # incomplete pairs do not stop a preview
        "strong sepia toning", "skimage/chelsea", None, a, None, api_name="/preview"
    )
    assert "strong sepia toning" in note
    from denoised_weights.plugins.image_translation.serve import DEFAULT_PROMPT

    job = client.submit(  # pairs need a prompt of their own: it makes the generated init
        None, DEFAULT_PROMPT, a, b, 10, False, "skimage/chelsea", None, api_name="/finetune"
    )
    with pytest.raises(AppError, match="what your uploaded pairs show"):
        job.result()


@pytest.fixture(scope="module")
def examples_app(tmp_path_factory, tiny_base, tiny_dataset):
    """The app on an examples-only generator (a barely fitted tiny one)."""
    from denoised_weights.pipeline.fit import fit
    from denoised_weights.plugins.image_translation.serve import serve

    gen = fit(
        tiny_dataset,
        tmp_path_factory.mktemp("examples_gen") / "gen",
        base=str(tiny_base),
        conditioning="examples",
        text_encoder="hash",
        objective="task",
        prediction_type="sample",
        max_steps=2,
        val_every=2,
        task_concepts=2,
        task_batch=4,
        n_examples=3,
    )
    app, studio = serve(
        port=_free_port(),
        workdir=tmp_path_factory.mktemp("serve_examples"),
        base=tiny_base,
        generator=gen,
        preset="tiny",
        block=False,
        echo=lambda _: None,
    )
    yield app, studio
    app.close()
    studio.close()


def test_an_examples_generator_previews_from_uploaded_pairs(examples_app, tmp_path):
    from gradio_client.exceptions import AppError

    app, _ = examples_app
    client = _client(app)
    (before, after), note = client.predict(
        "", "skimage/chelsea", None, None, None, api_name="/preview"
    )
    assert "reads examples" in note  # nothing to condition on yet: the photo, unchanged
    assert np.array_equal(np.asarray(Image.open(before)), np.asarray(Image.open(after)))
    afters = {}
    for concept in ("sepia-0.8", "invert-1"):
        a, b = _pairs(tmp_path / concept, concept)
        (_, after), note = client.predict("", "skimage/chelsea", None, a, b, api_name="/preview")
        assert "3 example pairs** (of 4)" in note, note  # the generator reads n_examples=3
        afters[concept] = np.asarray(Image.open(after), dtype=np.float32)
    assert np.abs(afters["sepia-0.8"] - afters["invert-1"]).max() > 0  # other pairs, other LoRA
    _, note = client.predict("", "skimage/chelsea", None, a, b[:2], api_name="/preview")
    assert "not used until there are as many B images as A images" in note  # no error
    job = client.submit(
        None, "", a, b[:2], 10, False, "skimage/chelsea", None, api_name="/finetune"
    )
    with pytest.raises(AppError, match="as many B images as A images"):
        job.result()
    # a fine-tune from the uploaded pairs: the generated init reads them
    job = client.submit(None, "", a, b, 10, False, "skimage/chelsea", None, api_name="/finetune")
    outputs = list(job)
    assert outputs and "Done" in outputs[-1][1], job.status()
    assert "uploaded pairs" in outputs[-2][1]


def test_finetune_streams_its_curve(tiny_app):
    app, _, _ = tiny_app
    client = _client(app)
    job = client.submit(
        "gamma-2.2", "", None, None, 10, False, "skimage/chelsea", None, api_name="/finetune"
    )
    outputs = list(job)
    assert outputs, job.status()
    last_plot, last_note, _ = outputs[-1]
    assert "Done" in last_note, last_note
    assert last_plot["datatypes"]["l1"] == "quantitative"
    steps = [row[0] for row in last_plot["data"]]
    assert steps[0] == 0 and steps[-1] == 10 and len(steps) >= 3
    assert any("Fine-tuning" in out[1] for out in outputs)  # progress came while it ran


def test_stop_ends_the_run(tiny_app):
    app, studio, _ = tiny_app
    client = _client(app)
    job = client.submit(
        "gamma-2.2", "", None, None, 400, True, "skimage/chelsea", None, api_name="/finetune"
    )
    deadline = time.monotonic() + 60
    while not studio.running(client.session_hash) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert studio.running(client.session_hash)
    assert client.predict(api_name="/stop") == "Stopped."
    assert not studio.running(client.session_hash)
    job.cancel()


@pytest.mark.slow
def test_page_in_chromium(tmp_path):
    """The shipped pack: page load to first preview, then a typed prompt, on a screenshot
    (saved to DNW_SERVE_SCREENSHOT when set, e.g. docs/serve.png)."""
    from cdp import Browser, find_chromium
    from denoised_weights.plugins.image_translation.serve import serve

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium (apt-get install -y chromium)")
    t0 = time.perf_counter()
    app, studio = serve(
        port=_free_port(), workdir=tmp_path / "work", block=False, echo=lambda _: None
    )
    started = time.perf_counter() - t0
    browser = Browser(chromium)
    try:
        t1 = time.perf_counter()
        browser.goto(app.local_url)
        browser.wait_for(
            "document.readyState === 'complete' && !!document.querySelector('#prompt textarea')"
        )
        loaded = time.perf_counter() - t1
        first = (
            "document.querySelectorAll('#preview img').length >= 2 && "
            "[...document.querySelectorAll('#preview img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        browser.wait_for(first, timeout=120)
        first_preview = time.perf_counter() - t1
        srcs = browser.js("[...document.querySelectorAll('#preview img')].map(i => i.src)")
        prompt = "a pencil sketch with medium 2-pixel strokes"
        browser.js(
            "(() => { const t = document.querySelector('#prompt "
            "textarea'); t.focus(); t.select(); return true; })()"
        )
        browser.type_text(prompt)
        browser.press_enter()
        browser.wait_for(
            f"document.querySelector('#note').innerText.includes({prompt!r})", timeout=120
        )
        browser.wait_for(
            f"{first} && [...document.querySelectorAll('#preview "
            f"img')].map(i => i.src).join() !== {','.join(srcs)!r}",
            timeout=60,
        )
        time.sleep(1.0)  # let the slider settle
        png = browser.screenshot()
        box = browser.js(
            "(() => { const r = document.querySelector('#preview').getBoundingClientRect(); "
            "return [r.left, r.top, r.right, r.bottom, window.devicePixelRatio]; })()"
        )
        new_srcs = browser.js("[...document.querySelectorAll('#preview img')].map(i => i.src)")
        # a fine-tune of 50 steps from the page: its curve shows while it runs
        browser.js(
            "[...document.querySelectorAll('button')].find(b "
            "=> b.innerText.trim() === 'Fine-tune').click()"
        )
        t2 = time.perf_counter()
        browser.wait_for(
            r"/generated: step "
            r"[1-9][0-9]*\/50/.test(document.querySelector('#ft-note')?.innerText || '')",
            timeout=180,
        )
        first_points = time.perf_counter() - t2
        browser.wait_for(
            r"/generated: step "
            r"([2-9][0-9])\/50/.test(document.querySelector('#ft-note')?.innerText || '')",
            timeout=180,
        )
        time.sleep(1.0)
        running_png = browser.screenshot()
        running_note = browser.js("document.querySelector('#ft-note').innerText")
        browser.js(
            "[...document.querySelectorAll('button')].find(b "
            "=> b.innerText.trim() === 'Stop').click()"
        )
        import urllib.request

        shown = [
            np.asarray(
                Image.open(io.BytesIO(urllib.request.urlopen(src, timeout=30).read())).convert(
                    "RGB"
                ),
                np.float32,
            )
            for src in new_srcs[:2]
        ]
    finally:
        browser.close()
        app.close()
        studio.close()
    target = Path(os.environ.get("DNW_SERVE_SCREENSHOT") or tmp_path / "serve.png")
    target.write_bytes(png)
    target.with_name(target.stem + "-finetune.png").write_bytes(running_png)
    assert "Fine-tuning" in running_note and "/50" in running_note
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32) / 255
    left, top, right, bottom, ratio = (float(v) for v in box)
    region = shot[int(top * ratio) : int(bottom * ratio), int(left * ratio) : int(right * ratio)]
    assert region.size and region.std() > 0.05  # a picture, not an empty frame
    # the translated image the page shows differs from the photo it was made from
    before, after = shown
    assert before.shape == after.shape and np.abs(before - after).mean() > 5
    print(
        f"serve start-up {started:.1f} s; page load {loaded:.1f} s; "
        f"page load to first preview {first_preview:.1f} s; fine-tune click to its first "
        f"curve point past step 0 {first_points:.1f} s"
    )
