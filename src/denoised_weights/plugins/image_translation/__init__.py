"""The reference plugin: image-to-image translation GANs (E2GAN-style generator, pix2pix loss).

Registrations are lazy ``"module:attr"`` strings, so loading this plugin imports no torch.
"""

from __future__ import annotations

from denoised_weights.core.hookspecs import hookimpl

_PRESETS = {
    "tiny": {"image_size": 32, "width": 8, "n_res": 1, "heads": 2, "rank": 2, "disc_width": 16},
    "small": {"image_size": 64, "width": 16, "n_res": 3, "heads": 4, "rank": 4, "disc_width": 32},
    "paper": {
        "image_size": 256,
        "width": 64,
        "n_res": 5,
        "heads": 8,
        "rank": 6,
        "disc_width": 64,
        "disc_layers": 3,
    },
}


@hookimpl
def register_tasks(register):
    register(
        "image-translation", "denoised_weights.plugins.image_translation.task:ImageTranslationTask"
    )


@hookimpl
def register_architectures(register):
    register("e2gan", "denoised_weights.plugins.image_translation.e2gan:E2GAN", **_PRESETS)


@hookimpl
def register_example_encoders(register):
    register("pair-cnn", "denoised_weights.plugins.image_translation.examples:PairEncoder")


@hookimpl
def register_pair_sources(register):
    register("catalogue", "denoised_weights.plugins.image_translation.pairs:CataloguePairs")
    register("folder", "denoised_weights.plugins.image_translation.pairs:FolderPairs")
    register(
        "instruct-pix2pix", "denoised_weights.plugins.image_translation.ip2p:InstructPix2PixPairs"
    )


@hookimpl
def register_metrics(register):
    module = "denoised_weights.plugins.image_translation.metrics"
    for name, cls in [
        ("l1", "L1"),
        ("psnr", "PSNR"),
        ("ssim", "SSIM"),
        ("lpips", "LPIPS"),
        ("fid", "FID"),
        ("kid", "KID"),
    ]:
        register(name, f"{module}:{cls}")


@hookimpl
def register_commands(cli):
    from denoised_weights.plugins.image_translation import commands

    commands.add_commands(cli)
