"""The paper's denoiser (Fig. 2): a 1-D UNet over one normalised weight block.

A block of ``block_size`` values is first cut into ``block_size / patch`` tokens of ``patch``
values (channels): the UNet then runs over a short sequence, which trains about ten times
faster on a CPU than one scalar per position (measured; see DESIGN.md). Each resolution has
ResBlocks and a transformer block (self-attention + cross-attention to the prompt's token
embeddings); skip connections join the down and up paths; a transformer block sits at the
bottleneck. The block index goes through a sinusoidal encoding and an MLP and is added to the
timestep embedding, which every ResBlock receives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from denoised_weights.core.interfaces import masked_mean


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


class ResBlock1D(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Transformer1D(nn.Module):
    """Pre-norm self-attention, cross-attention to the text tokens, and an MLP."""

    def __init__(self, channels: int, heads: int, text_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.cross_attn = nn.MultiheadAttention(
            channels, heads, kdim=text_dim, vdim=text_dim, batch_first=True
        )
        self.norm3 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels)
        )

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        text_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        t = x.transpose(1, 2)  # [B, L, C]
        h = self.norm1(t)
        t = t + self.self_attn(h, h, h, need_weights=False)[0]
        h = self.norm2(t)
        if text_index is None:
            t = (
                t
                + self.cross_attn(h, text, text, key_padding_mask=~text_mask, need_weights=False)[0]
            )
        else:
            t = t + self._cross_shared(h, text, text_mask, text_index)
        t = t + self.mlp(self.norm3(t))
        return t.transpose(1, 2)

    def _cross_shared(
        self, h: torch.Tensor, text: torch.Tensor, mask: torch.Tensor, index: torch.Tensor
    ) -> torch.Tensor:
        """The cross-attention with the text's keys and values projected once per prompt
        (``text [P, L, D]``) and gathered for each row by ``index [B]``: every block of a LoRA
        shares its prompt, so projecting the prompt once per block repeated the same work (and
        its weight gradient) a hundred times. Same parameters and results as ``cross_attn``."""
        mha = self.cross_attn
        c, heads = mha.embed_dim, mha.num_heads
        bias_q, bias_k, bias_v = mha.in_proj_bias.split(c)
        if mha._qkv_same_embed_dim:  # text as wide as the channels: one packed projection
            w_q, w_k, w_v = mha.in_proj_weight.split(c)
        else:
            w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        q = F.linear(h, w_q, bias_q)
        k = F.linear(text, w_k, bias_k)[index]
        v = F.linear(text, w_v, bias_v)[index]
        b, lq, _ = q.shape

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.view(b, -1, heads, c // heads).transpose(1, 2)

        att = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask[index][:, None, None, :]
        )
        return mha.out_proj(att.transpose(1, 2).reshape(b, lq, c))


class WeightUNet1D(ModelMixin, ConfigMixin):
    """ε̂(w_t, t, n, τ(T)): predicts the noise (or the clean block, or v) of a weight block."""

    @register_to_config
    def __init__(
        self,
        block_size: int = 256,
        patch: int = 16,
        channels: tuple[int, ...] = (64, 128),
        heads: int = 4,
        text_dim: int = 384,
        max_blocks: int = 8192,
        pooled_text: bool = False,
        emb_head: bool = False,
    ) -> None:
        super().__init__()
        if block_size % patch:
            raise ValueError(f"block_size {block_size} is not a multiple of patch {patch}")
        length = block_size // patch
        if length % (2 ** (len(channels) - 1)):
            raise ValueError(f"{length} tokens cannot be halved {len(channels) - 1} times")
        ch0 = channels[0]
        emb_dim = 4 * ch0
        self.time_proj = Timesteps(ch0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(ch0, emb_dim)
        self.index_proj = Timesteps(ch0, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.index_embed = TimestepEmbedding(ch0, emb_dim)
        # the prompt's pooled (masked-mean) token embedding, added to the embedding as well
        self.text_embed = TimestepEmbedding(text_dim, emb_dim) if pooled_text else None
        self.conv_in = nn.Conv1d(patch, ch0, 3, padding=1)
        self.down_res = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        cin = ch0
        for i, ch in enumerate(channels):
            self.down_res.append(ResBlock1D(cin, ch, emb_dim))
            self.down_attn.append(Transformer1D(ch, heads, text_dim))
            last = i == len(channels) - 1
            self.downsample.append(
                nn.Identity() if last else nn.Conv1d(ch, ch, 3, stride=2, padding=1)
            )
            cin = ch
        self.mid_res1 = ResBlock1D(cin, cin, emb_dim)
        self.mid_attn = Transformer1D(cin, heads, text_dim)
        self.mid_res2 = ResBlock1D(cin, cin, emb_dim)
        self.up_res = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, ch in reversed(list(enumerate(channels))):
            self.up_res.append(ResBlock1D(cin + ch, ch, emb_dim))
            self.up_attn.append(Transformer1D(ch, heads, text_dim))
            self.upsample.append(
                nn.Identity() if i == 0 else nn.Upsample(scale_factor=2, mode="nearest")
            )
            cin = ch
        self.norm_out = nn.GroupNorm(_groups(cin), cin)
        self.conv_out = nn.Conv1d(cin, patch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        # a direct path from the embedding (timestep + block index + pooled prompt) to the
        # output block: what the block should be whatever the noisy input says (the module is
        # not named after its config flag: diffusers resolves config names before modules)
        self.direct_head = None
        if emb_head:
            self.direct_head = nn.Sequential(
                nn.SiLU(),
                nn.Linear(emb_dim, 4 * emb_dim),
                nn.SiLU(),
                nn.Linear(4 * emb_dim, block_size),
            )
            nn.init.zeros_(self.direct_head[-1].weight)
            nn.init.zeros_(self.direct_head[-1].bias)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        block_index: torch.Tensor,
        text: torch.Tensor,
        text_mask: torch.Tensor,
        text_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sample [B, block_size]``, ``timestep [B]``, ``block_index [B]``, ``text [B, L, D]``,
        ``text_mask [B, L]`` → ``[B, block_size]``. With ``text_index [B]``, ``text`` and
        ``text_mask`` hold P distinct prompts (``[P, L, D]``, ``[P, L]``) and row i reads
        prompt ``text_index[i]``: the prompt's projections are then computed once per prompt
        (every block of one LoRA shares its prompt)."""
        b = sample.shape[0]
        patch = self.config.patch
        x = sample.view(b, -1, patch).transpose(1, 2)  # [B, patch, L]
        dtype = x.dtype
        emb = self.time_embed(self.time_proj(timestep).to(dtype)) + self.index_embed(
            self.index_proj(block_index).to(dtype)
        )
        if self.text_embed is not None:
            pooled = self.text_embed(masked_mean(text, text_mask).to(dtype))
            emb = emb + (pooled if text_index is None else pooled[text_index])
        h = self.conv_in(x)
        skips = []
        for res, attn, down in zip(self.down_res, self.down_attn, self.downsample, strict=True):
            h = attn(res(h, emb), text, text_mask, text_index)
            skips.append(h)
            h = down(h)
        h = self.mid_res2(self.mid_attn(self.mid_res1(h, emb), text, text_mask, text_index), emb)
        for res, attn, up in zip(self.up_res, self.up_attn, self.upsample, strict=True):
            h = attn(res(torch.cat([h, skips.pop()], dim=1), emb), text, text_mask, text_index)
            h = up(h)
        out = self.conv_out(F.silu(self.norm_out(h))).transpose(1, 2).reshape(b, -1)
        if self.direct_head is not None:
            out = out + self.direct_head(emb)
        return out
