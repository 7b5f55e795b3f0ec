"""``dnw export``: a translator (base + LoRA, merged by peft) as one file for devices.

``format="onnx"``: the merged network wrapped so that it takes what a device has and gives
what it shows: ``image`` float32 ``[batch, 3, height, width]`` RGB in [0, 1] in, ``translated``
of the same shape in [0, 1] out; the reflect padding to multiples of 4 and the crop back are
inside the graph, so any height and width work. Exported with ``torch.onnx.export`` (the
torch.export-based exporter by default, ``exporter="torchscript"`` for the older, faster one)
with batch, height and width dynamic; if a dynamic export fails, a fixed 256 x 256 export is
made and the report says so. The file is then checked with onnxruntime against PyTorch on
real photos (16 crops of 256 x 256 from both splits of the bundled photos, or your own, one
at a time and as one batch, plus two whole photos at an odd, non-square size): the largest
absolute difference must be at most 1e-4 (float32). The report (``<file>.json``) also holds
the file's size and onnxruntime's and PyTorch's latency per 256 x 256 image on this CPU.

``format="safetensors"``: peft's merged network as a full state dict (what ``arch.build()``
loads; inputs in [-1, 1]), with the architecture and its configuration in the metadata.

**peft's merge and the image border** (measured here, peft 0.21): peft builds a conv's LoRA
branch without the base layer's ``padding_mode``, so adapters of E2GAN's reflect-padded 7x7
stem and head were trained with a zero-padded update. A merged weight pads the whole kernel by
reflection, so peft's merged network differs from the adapter as trained in the outermost
pixels, and a little everywhere through the attention: on 16 real 256 x 256 crops, up to 0.12
(sepia) and 0.58 (pencil sketch) at the border, 3e-3 inside. The ONNX export therefore merges
with peft and then keeps those two layers' base weights with the merged update beside them as
one zero-padded convolution (:class:`ZeroPaddedDelta`): still no low-rank factors, and the file
equals the adapter as trained (``max_abs_diff_vs_adapter``). ``plain_merge`` exports peft's
merge as it is; every report gives peft's merge gap (``peft_merge_*``).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.plugins import Registries
from denoised_weights.plugins.image_translation.merge import ZeroPaddedDelta, merged_network
from denoised_weights.plugins.image_translation.options import CHECK_SIZE, ExportOptions

ONNX_TOLERANCE = 1e-4
OPSET = 18
BORDER = 16


class DeviceTranslator(nn.Module):
    """What the ONNX file holds: [0, 1] RGB in, [0, 1] RGB out, any size (padded inside)."""

    def __init__(self, arch: Any, net: nn.Module, multiple: int = 4) -> None:
        super().__init__()
        self.arch, self.net, self.multiple = arch, net, multiple

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        m = self.multiple
        x = F.pad(image, (0, (m - w % m) % m, 0, (m - h % m) % m), mode="reflect")
        return self.arch.forward(self.net, {"A": x}).clamp(0, 1)[:, :, :h, :w]


def output_path(out: str | Path, fmt: str) -> tuple[Path, Path]:
    """``(folder, file)``: ``--out model.onnx`` names the file, ``--out DIR`` a folder
    that gets ``model.onnx`` (or ``model.safetensors``)."""
    out = Path(out)
    if out.suffix.lower() in {".onnx", ".safetensors"}:
        if out.suffix.lower() != f".{fmt}":
            raise DnwError(
                f"--out {out} ends in {out.suffix} but --format is {fmt}; make them agree"
            )
        return out.parent, out
    return out, out / f"model.{fmt}"


def check_images(photos: str | Path | None = None, n: int = 16, size: int = CHECK_SIZE):
    """``(crops [n, 3, size, size], whole photos [(name, [1, 3, H, W])])`` of real photos:
    ``photos`` (a folder) or the bundled ones, both splits."""
    from denoised_weights.plugins.image_translation.photos import list_photos, sample_crops

    half = n // 2
    crops = torch.cat(
        [
            sample_crops(half, size, split="train", seed=11, photos_dir=photos),
            sample_crops(n - half, size, split="eval", seed=12, photos_dir=photos),
        ]
    )
    wholes = []
    for photo in list_photos(photos)[:2]:
        x = photo.tensor()
        scale = min(1.0, 1.25 * size / max(x.shape[-2:]))
        # an odd height: the padding to a multiple of 4 inside the graph is checked too
        size_hw = (max(8, round(x.shape[-2] * scale)) | 1, max(8, round(x.shape[-1] * scale)))
        wholes.append(
            (photo.name, F.interpolate(x[None], size=size_hw, mode="bilinear", antialias=True))
        )
    return crops, wholes


def _onnx_session(path: Path, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        raise DnwError(
            "onnxruntime is not installed; pip install 'denoised-weights[export]'"
        ) from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _latency(fn, runs: int = 10, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def export_onnx(
    module: DeviceTranslator, path: Path, *, exporter: str = "dynamo", dynamic: bool = True
) -> dict[str, Any]:
    """Write ``module`` to ``path`` with ``torch.onnx.export``; returns what was exported."""
    import warnings

    example = torch.rand(2, 3, 63, 97, generator=torch.Generator().manual_seed(0))
    if not dynamic:
        example = torch.rand(1, 3, CHECK_SIZE, CHECK_SIZE)
    kwargs: dict[str, Any] = {
        "input_names": ["image"],
        "output_names": ["translated"],
        "opset_version": OPSET,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            from torch.export import Dim

            dims = {
                0: Dim("batch", min=1, max=1024),
                2: Dim("height", min=4, max=16384),
                3: Dim("width", min=4, max=16384),
            }
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                verbose=False,
                dynamic_shapes={"image": dims} if dynamic else None,
                **kwargs,
            )
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                dynamic_axes={"image": axes, "translated": axes} if dynamic else None,
                **kwargs,
            )
    return {
        "exporter": exporter,
        "dynamic": ["batch", "height", "width"] if dynamic else [],
        "fixed_shape": None if dynamic else list(example.shape),
        "opset": OPSET,
    }


def _add_metadata(path: Path, meta: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value if isinstance(value, str) else json.dumps(value)
    onnx.save(model, str(path))  # one self-contained file: the weights are inline now
    leftover = path.with_name(path.name + ".data")  # torch's exporter wrote them beside it first
    if leftover.is_file():
        leftover.unlink()


def export(
    out: str | Path,
    *,
    overwrite: bool = False,
    registries: Registries | None = None,
    echo: Any = None,
    **options: Any,
) -> dict[str, Any]:
    """``dnw export``: base + adapter merged by peft, written as ONNX (checked against PyTorch
    with onnxruntime, size and latency measured) or as a merged safetensors state dict.
    Returns the report, also written beside the file (``<file>.json``). ``options``: the fields
    of :class:`~denoised_weights.plugins.image_translation.options.ExportOptions` (``adapter``
    is required; ``format`` defaults to ``out``'s suffix, else onnx).

    ``out`` ending in ``.onnx`` / ``.safetensors`` names the file: only that file (and its
    ``<file>.json`` report and ``<file>.run.json`` run record) is claimed, never the folder
    it is in. Any other ``out`` is a folder of its own that gets ``model.<format>``."""
    from denoised_weights.core.io import save_tensors, write_json
    from denoised_weights.core.outputs import claim_output, claim_output_file
    from denoised_weights.pipeline.options import split_options
    from denoised_weights.plugins.image_translation.translate import load_translator

    (opts,) = split_options("export", options, ExportOptions)
    base, adapter, exporter, threads = opts.base, opts.adapter, opts.exporter, opts.threads
    check_photos, n_check, check_size = opts.check_photos, opts.n_check, opts.check_size
    format = opts.format_for(out)
    say = echo or (lambda _line: None)
    folder, path = output_path(out, format)
    trained = load_translator(base, adapter, registries=registries)  # checks base and adapter
    info = trained.info
    merge = "peft" if format == "safetensors" or opts.plain_merge else "faithful"
    settings = {
        "base": str(Path(info["base"]).resolve()),
        "adapter": str(Path(info["adapter"]).resolve()),
        "format": format,
        "exporter": exporter if format == "onnx" else None,
        "merge": merge,
        "file": path.name,
        "check_photos": str(check_photos) if check_photos else None,
        "check_images": n_check,
        "check_size": check_size,
    }
    sidecars = (path.name + ".json", path.name + ".data")
    if Path(out) == path:  # --out names the file: claim it alone
        claim_output_file(path, "export", settings, overwrite=overwrite, sidecars=sidecars)
    else:  # --out names a folder that gets model.<format>
        claim_output(folder, "export", settings, overwrite=overwrite, owned=(path.name, *sidecars))
    crops, wholes = check_images(check_photos, n_check, check_size)
    adapter_net = trained.model.cpu().eval()
    plain = load_translator(info["base"], info["adapter"], merge="peft", registries=registries)
    with torch.no_grad():
        ref = trained.task.predict(trained.arch, adapter_net, {"A": crops})
        gap = (ref - plain.task.predict(plain.arch, plain.model.cpu(), {"A": crops})).abs()
    exported = (
        plain
        if merge == "peft"
        else load_translator(info["base"], info["adapter"], merge=merge, registries=registries)
    )
    arch, net = exported.arch, exported.model.cpu().eval()
    report: dict[str, Any] = {
        "file": str(path),
        "format": format,
        "merge": merge,
        "base": info["base"],
        "adapter": info["adapter"],
        "prompt": info.get("prompt"),
        "architecture": arch.name,
        "config": arch.config,
        "peft_merge_max_abs_diff": float(gap.max()),
        "peft_merge_mean_abs_diff": float(gap.mean()),
    }
    interior = gap[..., BORDER:-BORDER, BORDER:-BORDER]  # empty for check crops of 32 or less
    report["peft_merge_interior_max_abs_diff"] = float(interior.max()) if interior.numel() else None
    if format == "safetensors":
        save_tensors(
            path,
            net.state_dict(),
            {
                "architecture": arch.name,
                "config": json.dumps(arch.config),
                "prompt": info.get("prompt") or "",
                "input": "[B, 3, H, W] in [-1, 1], H and W multiples of 4; output in [-1, 1]",
            },
        )
        report.update(_check_safetensors(path, arch, net, crops))
    else:
        report.update(
            _export_and_check(
                path,
                arch,
                net,
                crops,
                wholes,
                exporter,
                threads,
                say,
                reference=(trained.arch, adapter_net),
            )
        )
    report["bytes"] = path.stat().st_size
    report["megabytes"] = round(path.stat().st_size / 2**20, 3)
    write_json(path.with_name(path.name + ".json"), report)
    if format == "onnx" and report["max_abs_diff"] > ONNX_TOLERANCE:
        raise DnwError(
            f"{path}: onnxruntime differs from PyTorch by {report['max_abs_diff']:.2e} "
            f"(> {ONNX_TOLERANCE:g}); do not ship it: try --exporter torchscript and report it"
        )
    return report


def _check_safetensors(path: Path, arch: Any, net: nn.Module, crops: torch.Tensor):
    from denoised_weights.core.io import load_tensors

    weights, _ = load_tensors(path, finite=True)
    again = arch.build()
    again.load_state_dict(weights)
    again.eval()
    with torch.no_grad():
        diff = (arch.forward(again, {"A": crops}) - arch.forward(net, {"A": crops})).abs().max()
    return {"reload_max_abs_diff": float(diff), "check_images": len(crops)}


def _export_and_check(path, arch, net, crops, wholes, exporter, threads, say, reference):
    module = DeviceTranslator(arch, net).eval()
    say(f"exporting to ONNX with the {exporter} exporter ...")
    t0 = time.perf_counter()
    try:
        how = export_onnx(module, path, exporter=exporter, dynamic=True)
    except Exception as exc:  # a dynamic export that fails: fall back to a fixed size
        how = export_onnx(module, path, exporter=exporter, dynamic=False)
        how["dynamic_failed"] = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
    how["export_seconds"] = round(time.perf_counter() - t0, 2)
    _add_metadata(
        path,
        {
            "dnw_input": "image: float32 [batch, 3, height, width] RGB in [0, 1]",
            "dnw_output": "translated: float32, same shape, in [0, 1]",
            "dnw_architecture": arch.name,
            "dnw_config": arch.config,
        },
    )
    say("checking it with onnxruntime against PyTorch on real photos ...")
    session = _onnx_session(path, threads)

    def run_ort(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

    diffs = {}
    with torch.no_grad():
        ort_crops = torch.cat([run_ort(c[None]) for c in crops])
        size = f"{crops.shape[-1]}x{crops.shape[-2]}"
        diffs[f"{len(crops)} crops {size}"] = float((ort_crops - module(crops)).abs().max())
        ref_arch, ref_net = reference
        vs_adapter = (ort_crops - ref_arch.forward(ref_net, {"A": crops}).clamp(0, 1)).abs()
        if how["dynamic"]:
            diffs[f"batch of {len(crops)}"] = float((run_ort(crops) - module(crops)).abs().max())
            for name, x in wholes:
                key = f"{name} {x.shape[-1]}x{x.shape[-2]}"
                diffs[key] = float((run_ort(x) - module(x)).abs().max())
        one = crops[:1].contiguous()
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            torch_latency = _latency(lambda: module(one))
        finally:
            torch.set_num_threads(torch_threads)
    ort_latency = _latency(lambda: session.run(None, {"image": one.numpy()}))
    return {
        **how,
        "check_images": len(crops),
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_per_check": diffs,
        "tolerance": ONNX_TOLERANCE,
        "max_abs_diff_vs_adapter": float(vs_adapter.max()),
        "mean_abs_diff_vs_adapter": float(vs_adapter.mean()),
        "latency_threads": threads,
        "latency_image": size,
        "onnxruntime_ms_per_image": round(ort_latency * 1000, 2),
        "pytorch_ms_per_image": round(torch_latency * 1000, 2),
    }


__all__ = ["DeviceTranslator", "ZeroPaddedDelta", "export", "merged_network"]
