"""E2GAN-style image-to-image generator and a PatchGAN discriminator (pix2pix loss).

Generator (after E2GAN, Gong et al. ICML 2024, whose code was not released): a 7x7 conv
stem, two stride-2 convs down, ResNet blocks, one transformer block over the bottleneck
tokens, and two Upsample + 3x3 conv stages up (no ConvTranspose2d: peft has no LoRA for it),
then a 7x7 conv and tanh. Every conv and linear layer gets LoRA. Images are ``[B, 3, H, W]``
in [0, 1] at the interface and in [-1, 1] inside the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoised_weights.core.errors import DnwError
from denoised_weights.core.interfaces import Phase, TargetArchitecture
from denoised_weights.core.lora import LoraSpec, conv_norm

NORMS = ("batch", "instance")
NORM_TYPES = (nn.BatchNorm2d, nn.InstanceNorm2d)


def _norm(channels: int, kind: str = "batch") -> nn.Module:
    """BatchNorm as in pix2pix (and the paper's layer groups); InstanceNorm as in CycleGAN."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.BatchNorm2d(channels)


def _nhwc_on_cpu(x: torch.Tensor) -> torch.Tensor:
    """Images channels-last on the CPU, where oneDNN's NHWC kernels made E2GAN's training step
    ~15-20% faster here (full and LoRA alike); the format then flows through the network."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


class ConvNormAct(nn.Module):
    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, act: bool = True, norm: str = "batch"
    ) -> None:
        pad_mode = "reflect" if k > 3 else "zeros"
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, padding_mode=pad_mode, bias=False)
        self.norm = _norm(cout, norm)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a LoRA fine-tune's frozen BatchNorm folds into the merged conv (same result)
        return self.act(conv_norm(self.conv, self.norm, x))


class ResBlock(nn.Module):
    def __init__(self, channels: int, norm: str = "batch") -> None:
        super().__init__()
        self.block1 = ConvNormAct(channels, channels, 3, norm=norm)
        self.block2 = ConvNormAct(channels, channels, 3, act=False, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block2(self.block1(x))


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP over the bottleneck's H*W tokens."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise DnwError(f"transformer width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        y = self.norm1(t)

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, h * w, self.heads, c // self.heads).transpose(1, 2)

        att = F.scaled_dot_product_attention(split(self.q(y)), split(self.k(y)), split(self.v(y)))
        t = t + self.proj(att.transpose(1, 2).reshape(b, h * w, c))
        t = t + self.fc2(F.gelu(self.fc1(self.norm2(t))))
        return t.transpose(1, 2).reshape(b, c, h, w)


class E2GANGenerator(nn.Module):
    def __init__(
        self,
        width: int = 16,
        n_res: int = 3,
        heads: int = 4,
        in_channels: int = 3,
        out_channels: int = 3,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        w = width
        self.stem = ConvNormAct(in_channels, w, 7, norm=norm)
        self.down1 = ConvNormAct(w, 2 * w, 3, stride=2, norm=norm)
        self.down2 = ConvNormAct(2 * w, 4 * w, 3, stride=2, norm=norm)
        self.res = nn.Sequential(*[ResBlock(4 * w, norm) for _ in range(n_res)])
        self.attn = TransformerBlock(4 * w, heads)
        self.up1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), ConvNormAct(4 * w, 2 * w, 3, norm=norm)
        )
        self.up2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), ConvNormAct(2 * w, w, 3, norm=norm)
        )
        self.head = nn.Conv2d(w, out_channels, 7, padding=3, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [-1, 1] → output in [-1, 1]."""
        h = self.down2(self.down1(self.stem(x)))
        h = self.attn(self.res(h))
        return torch.tanh(self.head(self.up2(self.up1(h))))


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN on the channel-concatenated (source, output) pair; logits per patch."""

    def __init__(self, width: int = 32, n_layers: int = 2, in_channels: int = 6) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = width
        for i in range(1, n_layers + 1):
            nxt = width * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(ch, nxt, 4, stride, 1, bias=False),
                _norm(nxt),
                nn.LeakyReLU(0.2, True),
            ]
            ch = nxt
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b], dim=1))


@dataclass
class GanTrainState:
    discriminator: PatchDiscriminator
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    lambda_l1: float
    steps: int = 0
    #: keep the network's batch-norm statistics fixed (LoRA fine-tuning: the adapter cannot
    #: store running statistics, so changing them would make a saved adapter lie)
    freeze_norm_stats: bool = False

    def state_dict(self) -> dict[str, Any]:
        return {
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.steps = int(state["steps"])


class E2GAN(TargetArchitecture):
    """The reference architecture: E2GAN-style generator, PatchGAN, pix2pix conditional GAN loss."""

    lora_config_keys = ("rank", "alpha", "train_norms", "lora_seed", "shared_a")
    #: pix2pix's Adam rate for a full network; a LoRA adapter takes a larger one
    learning_rates = {"full": 2e-4, "lora": 1e-3}  # noqa: RUF012

    def __init__(
        self,
        image_size: int = 64,
        width: int = 16,
        n_res: int = 3,
        heads: int = 4,
        rank: int = 4,
        alpha: float | None = None,
        train_norms: bool = False,
        lora_seed: int = 0,
        shared_a: bool = False,
        disc_width: int = 32,
        disc_layers: int = 2,
        norm: str = "batch",
    ) -> None:
        for key, value in {
            "image_size": image_size,
            "width": width,
            "rank": rank,
            "heads": heads,
        }.items():
            if not isinstance(value, int) or value < 1:
                raise DnwError(f"e2gan: {key} must be a positive integer, got {value!r}")
        if image_size % 4:
            raise DnwError(f"e2gan: image_size must be a multiple of 4, got {image_size}")
        if norm not in NORMS:
            raise DnwError(f"e2gan: norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if n_res < 0:
            raise DnwError(f"e2gan: n_res must be >= 0, got {n_res}")
        self._config = {
            "image_size": image_size,
            "width": width,
            "n_res": n_res,
            "heads": heads,
            "rank": rank,
            "alpha": alpha,
            "train_norms": train_norms,
            "lora_seed": lora_seed,
            **({"shared_a": True} if shared_a else {}),  # recorded only when on (fingerprints)
            "disc_width": disc_width,
            "disc_layers": disc_layers,
            "norm": norm,
        }
        self.name = "e2gan"

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def image_size(self) -> int:
        return self._config["image_size"]

    def build(self, seed: int = 0) -> E2GANGenerator:
        c = self._config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return E2GANGenerator(c["width"], c["n_res"], c["heads"], norm=c["norm"])

    def build_discriminator(self, seed: int = 0) -> PatchDiscriminator:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return PatchDiscriminator(self._config["disc_width"], self._config["disc_layers"])

    def auxiliary_modules(self) -> dict[str, nn.Module]:
        return {"discriminator": self.build_discriminator()}

    def lora_spec(self) -> LoraSpec:
        """Every conv and linear layer; computed once (it needs a built network) and copied."""
        if getattr(self, "_spec", None) is None:
            self._spec = self._make_lora_spec()
        return dataclasses.replace(self._spec)

    def _make_lora_spec(self) -> LoraSpec:
        model = self.build()
        targets: list[str] = []
        norms: dict[str, str] = {}
        last_layer = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                targets.append(name)
                last_layer = name
            elif isinstance(module, NORM_TYPES) and last_layer is not None:
                norms[name] = last_layer  # the norm joins the conv it follows
        c = self._config
        return LoraSpec(
            target_modules=targets,
            rank=c["rank"],
            alpha=c["alpha"],
            norm_modules=norms,
            train_norms=c["train_norms"],
            init_seed=c["lora_seed"],
            shared_a=c.get("shared_a", False),
        )

    def dummy_batch(self, batch_size: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        s = self.image_size
        a = torch.rand(batch_size, 3, s, s, generator=g)
        return {"A": a, "B": 1.0 - a}

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return ((model(_nhwc_on_cpu(batch["A"] * 2 - 1)) + 1) / 2).contiguous()

    def init_training(
        self,
        model: nn.Module,
        *,
        seed: int = 0,
        lr: float = 2e-4,
        beta1: float = 0.5,
        lambda_l1: float = 100.0,
        discriminator: PatchDiscriminator | None = None,
    ) -> GanTrainState:
        disc = discriminator if discriminator is not None else self.build_discriminator(seed + 1)
        device = next(model.parameters()).device
        disc.to(device).train()
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise DnwError("the model has no trainable parameters")
        partial = len(params) < sum(1 for _ in model.parameters())
        return GanTrainState(
            freeze_norm_stats=partial,
            discriminator=disc,
            opt_g=torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999)),
            opt_d=torch.optim.Adam(disc.parameters(), lr=lr, betas=(beta1, 0.999)),
            lambda_l1=lambda_l1,
        )

    def training_carry(self, state: GanTrainState) -> dict[str, torch.Tensor]:
        """The discriminator's weights: a fine-tune starts its adversary from the base's."""
        return {f"discriminator.{k}": v for k, v in state.discriminator.state_dict().items()}

    def load_training_carry(self, state: GanTrainState, carry: Mapping[str, torch.Tensor]) -> None:
        own = {
            k.removeprefix("discriminator."): v
            for k, v in carry.items()
            if k.startswith("discriminator.")
        }
        if own:
            try:
                state.discriminator.load_state_dict(own)
            except RuntimeError as exc:
                raise DnwError(
                    "the base's discriminator does not fit "
                    f"this network ({str(exc).splitlines()[0]})"
                ) from None

    def training_phases(
        self, model: nn.Module, state: GanTrainState, batch: Mapping[str, torch.Tensor]
    ) -> Iterator[Phase]:
        """pix2pix: D on (A, B) vs (A, G(A)); then G by the adversarial term + λ·L1 to B."""
        model.train()
        if state.freeze_norm_stats:
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        a, b = batch["A"] * 2 - 1, batch["B"] * 2 - 1
        a, b = _nhwc_on_cpu(a), _nhwc_on_cpu(b)
        fake = model(a)
        disc = state.discriminator
        disc.requires_grad_(True)
        real_logits = disc(a, b)
        fake_logits = disc(a, fake.detach())
        loss_d = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
        yield Phase("loss_d", loss_d, state.opt_d)
        disc.requires_grad_(False)  # the discriminator has stepped; G's loss sees the new one
        logits = disc(a, fake)
        loss_gan = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        loss_l1 = F.l1_loss(fake, b)
        logs = {"loss_gan": loss_gan.detach(), "l1": loss_l1.detach() / 2}
        yield Phase("loss_g", loss_gan + state.lambda_l1 * loss_l1, state.opt_g, logs)
        state.steps += 1

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        was_training = model.training
        model.eval()
        out = self.forward(model, batch).clamp(0, 1)
        model.train(was_training)
        l1 = (out - batch["B"]).abs().mean().item()
        mse = ((out - batch["B"]) ** 2).mean().clamp_min(1e-10)
        return {"l1": l1, "psnr": (10 * torch.log10(1.0 / mse)).item()}
