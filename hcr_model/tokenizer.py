"""Multi-scale residual VQ-VAE tokenizer (VAR-style) and the hidden code.

An image (B, 3, R, R) in [0, 1] is encoded to a latent f (B, C, R/16, R/16).
Residual quantization then runs over the scales (1, 2, 3, 4, 6, 8, 12, 16 by
default). At scale s the residual left by the coarser scales is
area-downsampled to s×s, and each vector is replaced by its nearest entry of
that scale's codebook. The quantized map is upsampled (bicubic) back to the
latent size through a light refinement conv and subtracted from the residual.
The decoder maps the sum of the scales' contributions back to pixels.

The hidden code is the token indices of the first ``hidden_scales`` scales
(1, 2 and 3 by default: 14 tokens of 10 bits, 140 bits).

The model is fully convolutional: on an input of another size each scale is
clipped to the latent size (a 128×128 crop has an 8×8 latent, so scales 12 and
16 run at 8×8). Tokens and codes of the shipped weights are defined at
R = 256.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "hcr-tokenizer"
DEFAULT_VERSION = "v1"


class TokenizerConfig(BaseModel):
    """Architecture of the tokenizer; stored inside every weight file."""

    model_config = ConfigDict(frozen=True)

    resolution: int = Field(256, description="working resolution R in pixels (square)")
    latent_stride: int = Field(16, description="pixels per latent cell; fixed by the four 2× downsamplings")
    scales: tuple[int, ...] = Field((1, 2, 3, 4, 6, 8, 12, 16), description="tokens per side at each scale, coarse to fine")
    codebook_size: int = Field(1024, description="entries per scale codebook (10 bits per token)")
    code_dim: int = Field(32, description="channels of the latent and of each codebook vector")
    channels: tuple[int, ...] = Field((32, 48, 96, 160), description="conv widths at R/2, R/4, R/8, R/16")
    res_blocks: tuple[int, ...] = Field((0, 1, 1, 2), description="residual blocks per level, encoder and decoder")
    hidden_scales: int = Field(3, description="scales whose tokens form the hidden code")
    embedding_dim: int = Field(128, description="size D of the code embedding")
    refine_ratio: float = Field(0.5, description="weight of the refinement conv applied to each upsampled scale")
    ema_decay: float = Field(0.99, description="decay of the EMA codebook statistics")

    @property
    def token_bits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def latent_size(self) -> int:
        return self.resolution // self.latent_stride

    @property
    def code_tokens(self) -> int:
        return sum(s * s for s in self.scales[: self.hidden_scales])

    @property
    def code_bits(self) -> int:
        return self.code_tokens * self.token_bits


class ResBlock(nn.Module):
    """Pre-activation residual block without normalization.

    The second conv starts at zero so each block begins as the identity, which
    keeps the norm-free network stable at small batch sizes.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """(B, 3, H, W) in [0, 1] → (B, code_dim, H/16, W/16)."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels
        # Pixel unshuffle halves the resolution losslessly, so no conv runs at full R.
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), nn.Conv2d(12, ch[0], 3, padding=1)]
        for level, width in enumerate(ch):
            if level > 0:
                layers.append(nn.Conv2d(ch[level - 1], width, 3, stride=2, padding=1))
            layers += [ResBlock(width) for _ in range(cfg.res_blocks[level])]
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], cfg.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


class Decoder(nn.Module):
    """(B, code_dim, h, w) → (B, 3, 16h, 16w), unclamped (about [0, 1])."""

    def __init__(self, cfg: TokenizerConfig) -> None:
        super().__init__()
        ch = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(cfg.code_dim, ch[-1], 3, padding=1)]
        for level in range(len(ch) - 1, -1, -1):
            layers += [ResBlock(ch[level]) for _ in range(cfg.res_blocks[level])]
            if level > 0:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[level], ch[level - 1], 3, padding=1)]
        layers += [nn.SiLU(), nn.Conv2d(ch[0], 12, 3, padding=1), nn.PixelShuffle(2)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z) * 0.5 + 0.5


class Refine(nn.Module):
    """Per-scale refinement of an upsampled quantized map: (1-a)·u + a·conv(u), as VAR's Phi."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.ratio = ratio

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return u * (1.0 - self.ratio) + self.conv(u) * self.ratio


class CodeHead(nn.Module):
    """Code embedding from the hidden-code prefix latent, plus a distillation predictor.

    ``forward`` maps the prefix latent (B, C, 16, 16) to the unnormalized code
    embedding (B, D). ``predict_teacher`` maps that embedding to the 1280
    MobileNetV2 pooled features, used only by the distillation loss.

    NOTE: only the distillation loss trains this head. Weights trained with
    ``--no-distill`` give a random projection of the prefix latent.
    """

    def __init__(self, code_dim: int, embedding_dim: int, teacher_dim: int = 1280) -> None:
        super().__init__()
        # Pool to 8×8 and reduce to 4×4, because the prefix latent has little detail beyond a 3×3 grid.
        self.convs = nn.Sequential(
            nn.AdaptiveAvgPool2d(8),
            nn.Conv2d(code_dim, 96, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(96, 128, 3, stride=2, padding=1),
            nn.SiLU(),
        )
        self.proj = nn.Linear(128 * 16, embedding_dim)
        self.predictor = nn.Sequential(nn.Linear(embedding_dim, 512), nn.SiLU(), nn.Linear(512, teacher_dim))

    def forward(self, prefix_latent: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(prefix_latent).flatten(1))

    def predict_teacher(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.predictor(embedding)


@dataclass
class QuantizeOutput:
    """Result of the residual quantization of one batch."""

    tokens: list[torch.Tensor]  # per scale (B, s, s) int64
    contributions: list[torch.Tensor]  # per scale (B, C, h, w), straight-through to the encoder
    commitment: torch.Tensor  # scalar, mean over scales of ||r - sg(e)||²
    refine_loss: torch.Tensor  # scalar, mean over scales of ||sg-path f_hat_k - sg(f)||², trains the refinements


@dataclass
class ForwardOutput:
    """Training forward pass of ``MultiScaleVQ``."""

    reconstruction: torch.Tensor  # (B, 3, H, W), unclamped
    latent: torch.Tensor  # (B, C, h, w) encoder output, detached
    tokens: list[torch.Tensor]
    commitment: torch.Tensor
    refine_loss: torch.Tensor
    code_embedding: torch.Tensor  # (B, D), unnormalized
    teacher_prediction: torch.Tensor  # (B, 1280)


class MultiScaleVQ(nn.Module):
    """Multi-scale residual VQ-VAE with per-scale EMA codebooks."""

    def __init__(self, cfg: TokenizerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or TokenizerConfig()
        c = self.cfg
        if len(c.channels) != 4 or len(c.res_blocks) != 4:
            raise ValueError("channels and res_blocks need 4 entries (levels at R/2, R/4, R/8, R/16)")
        if list(c.scales) != sorted(c.scales) or c.scales[-1] != c.latent_size:
            raise ValueError(f"scales must increase and end at the latent size {c.latent_size}, got {c.scales}")
        if not 1 <= c.hidden_scales <= len(c.scales):
            raise ValueError(f"hidden_scales must be in 1..{len(c.scales)}, got {c.hidden_scales}")

        n = len(c.scales)
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.refine = nn.ModuleList(Refine(c.code_dim, c.refine_ratio) for _ in range(n))
        self.code_head = CodeHead(c.code_dim, c.embedding_dim)

        # Codebooks are EMA cluster centres, not trained by gradients.
        self.register_buffer("codebooks", torch.randn(n, c.codebook_size, c.code_dim) * 0.1)
        self.register_buffer("ema_cluster_size", torch.zeros(n, c.codebook_size))
        self.register_buffer("ema_embed_sum", torch.zeros(n, c.codebook_size, c.code_dim))
        self.register_buffer("ema_initialized", torch.zeros((), dtype=torch.bool))

    # ---- quantization -------------------------------------------------------------

    def scale_sizes(self, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """Return each scale's token grid (h, w), clipped to the latent size."""
        h, w = latent_hw
        return [(min(s, h), min(s, w)) for s in self.cfg.scales]

    def _upsample(self, q: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        if q.shape[-2:] == latent_hw:
            return q
        return F.interpolate(q, size=latent_hw, mode="bicubic", align_corners=False)

    def _nearest(self, k: int, r: torch.Tensor) -> torch.Tensor:
        """Return the index (B, h, w) of scale k's codebook entry nearest to each vector of r (B, C, h, w)."""
        b, c, h, w = r.shape
        flat = r.permute(0, 2, 3, 1).reshape(-1, c).float()
        book = self.codebooks[k]
        # fp32 even under autocast: bf16 distances would pick wrong neighbours.
        with torch.autocast(device_type=r.device.type, enabled=False):
            dist = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ book.t() + book.pow(2).sum(1)[None]
        return dist.argmin(dim=1).view(b, h, w)

    def _lookup(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        """Return the codebook vectors (B, C, h, w) of token indices (B, h, w) at scale k."""
        return self.codebooks[k][idx].permute(0, 3, 1, 2)

    def quantize(self, f: torch.Tensor, prefix: list[torch.Tensor] | None = None, update_codebooks: bool = False) -> QuantizeOutput:
        """Quantize the latent f (B, C, h, w) scale by scale.

        The first ``len(prefix)`` scales take the given tokens instead of the
        nearest codebook entry, and the finer scales quantize what those left
        unexplained (teacher forcing of a coarse prefix).
        """
        latent_hw = tuple(f.shape[-2:])
        sizes = self.scale_sizes(latent_hw)
        prefix = list(prefix or [])
        if len(prefix) > len(sizes):
            raise ValueError(f"prefix has {len(prefix)} scales, the tokenizer has {len(sizes)}")

        residual = f.float()
        f_target = f.detach().float()
        f_hat_sg = torch.zeros_like(f_target)
        tokens: list[torch.Tensor] = []
        contributions: list[torch.Tensor] = []
        commitment = f.new_zeros((), dtype=torch.float32)
        refine_loss = f.new_zeros((), dtype=torch.float32)

        for k, size in enumerate(sizes):
            r = F.adaptive_avg_pool2d(residual, size) if size != latent_hw else residual
            if k < len(prefix):
                idx = prefix[k].to(f.device, torch.long)
                if tuple(idx.shape[-2:]) != size or idx.shape[0] != f.shape[0]:
                    raise ValueError(f"prefix tokens at scale {k} have shape {tuple(idx.shape)}, expected {(f.shape[0], *size)}")
            else:
                idx = self._nearest(k, r.detach())
            if update_codebooks:
                self._ema_update(k, r.detach(), idx)
            e = self._lookup(k, idx)

            # Straight-through: the value is the codebook vector, the gradient goes to r.
            z = r + (e - r).detach()
            h = self.refine[k](self._upsample(z, latent_hw))
            h_sg = self.refine[k](self._upsample(e, latent_hw))

            commitment = commitment + F.mse_loss(r, e.detach())
            f_hat_sg = f_hat_sg + h_sg
            refine_loss = refine_loss + F.mse_loss(f_hat_sg, f_target)

            residual = residual - h.detach()
            tokens.append(idx)
            contributions.append(h)

        n = len(sizes)
        return QuantizeOutput(tokens, contributions, commitment / n, refine_loss / n)

    @torch.no_grad()
    @torch.autocast(device_type="cuda", enabled=False)
    def _ema_update(self, k: int, r: torch.Tensor, idx: torch.Tensor) -> None:
        c = self.cfg
        flat = r.permute(0, 2, 3, 1).reshape(-1, c.code_dim).float()
        onehot = F.one_hot(idx.reshape(-1), c.codebook_size).float()
        decay = c.ema_decay
        self.ema_cluster_size[k].mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
        self.ema_embed_sum[k].mul_(decay).add_(onehot.t() @ flat, alpha=1 - decay)

        # Laplace smoothing keeps rarely used entries from dividing by ~0.
        size = self.ema_cluster_size[k]
        total = size.sum()
        smoothed = (size + 1e-5) / (total + c.codebook_size * 1e-5) * total
        used = size > 1e-8
        centres = self.ema_embed_sum[k] / smoothed.clamp_min(1e-12)[:, None]
        self.codebooks[k][used] = centres[used]

    @torch.no_grad()
    def init_codebooks(self, f: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Initialize every codebook from the residuals of a batch of latents (B, C, h, w).

        Entries are drawn from the batch's residual vectors at their scale,
        with a little noise so duplicates separate.
        """
        c = self.cfg
        residual = f.detach().float()
        latent_hw = tuple(f.shape[-2:])
        for k, size in enumerate(self.scale_sizes(latent_hw)):
            r = F.adaptive_avg_pool2d(residual, size)
            flat = r.permute(0, 2, 3, 1).reshape(-1, c.code_dim)
            pick = torch.randint(0, flat.shape[0], (c.codebook_size,), generator=generator, device=flat.device)
            noise = torch.randn(c.codebook_size, c.code_dim, generator=generator, device=flat.device)
            self.codebooks[k] = flat[pick] + noise * flat.std().clamp_min(1e-3) * 0.1
            # Start every entry at the uniform share, so none counts as dead before it had a chance.
            self.ema_cluster_size[k] = flat.shape[0] / c.codebook_size
            self.ema_embed_sum[k] = self.codebooks[k] * self.ema_cluster_size[k][:, None]
            idx = self._nearest(k, r)
            residual = residual - self.refine[k](self._upsample(self._lookup(k, idx), latent_hw))
        self.ema_initialized.fill_(True)

    @torch.no_grad()
    def restart_dead_codes(self, f: torch.Tensor, min_share: float = 0.1) -> list[int]:
        """Move rarely used entries onto the worst-quantized residual vectors of the batch latents f (B, C, h, w).

        An entry is dead when its EMA assignment count is below ``min_share``
        of the uniform share (assignments per step / codebook size). At most
        one entry per batch vector is restarted per call, so the coarse scales
        (a few vectors per batch) do not copy one vector into hundreds of
        entries. Returns the number of restarted entries per scale.
        """
        c = self.cfg
        latent_hw = tuple(f.shape[-2:])
        residual = f.detach().float()
        restarted = []
        for k, size in enumerate(self.scale_sizes(latent_hw)):
            r = F.adaptive_avg_pool2d(residual, size)
            flat = r.permute(0, 2, 3, 1).reshape(-1, c.code_dim)
            idx = self._nearest(k, r)
            uniform = flat.shape[0] / c.codebook_size
            dead = (self.ema_cluster_size[k] < min_share * uniform).nonzero().flatten()

            count = min(dead.numel(), flat.shape[0])
            if count > 0:
                # The least used entries move onto the vectors the codebook fits worst.
                dead = dead[self.ema_cluster_size[k][dead].argsort()[:count]]
                error = (flat - self.codebooks[k][idx.reshape(-1)]).pow(2).sum(1)
                vectors = flat[error.argsort(descending=True)[:count]]
                self.codebooks[k][dead] = vectors
                self.ema_cluster_size[k][dead] = uniform
                self.ema_embed_sum[k][dead] = vectors * uniform
            restarted.append(count)
            residual = residual - self.refine[k](self._upsample(self._lookup(k, idx), latent_hw))
        return restarted

    # ---- training forward -------------------------------------------------------

    def forward(self, x: torch.Tensor, keep_scales: torch.Tensor | None = None, update_codebooks: bool = False) -> ForwardOutput:
        """Training forward pass on images (B, 3, H, W) in [0, 1].

        ``keep_scales`` (B,) int cuts each image's sum after that many scales
        (quantizer dropout); None keeps all scales.
        """
        f = self.encoder(x)
        q = self.quantize(f, update_codebooks=update_codebooks)

        n = len(q.contributions)
        stacked = torch.stack(q.contributions, dim=1)  # (B, n, C, h, w)
        if keep_scales is not None:
            keep = torch.arange(n, device=x.device)[None, :] < keep_scales.to(x.device)[:, None]
            stacked = stacked * keep[:, :, None, None, None].to(stacked.dtype)
        f_hat = stacked.sum(dim=1)

        prefix_latent = torch.stack(q.contributions[: self.cfg.hidden_scales], dim=1).sum(dim=1)
        embedding = self.code_head(prefix_latent)
        return ForwardOutput(
            reconstruction=self.decoder(f_hat),
            latent=f.detach(),
            tokens=q.tokens,
            commitment=q.commitment,
            refine_loss=q.refine_loss,
            code_embedding=embedding,
            teacher_prediction=self.code_head.predict_teacher(embedding),
        )

    # ---- inference API ----------------------------------------------------------

    def _check_images(self, x: torch.Tensor) -> None:
        stride = self.cfg.latent_stride
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(x.shape)}")
        if x.shape[-1] % stride or x.shape[-2] % stride:
            raise ValueError(f"image height and width must be multiples of {stride}, got {tuple(x.shape[-2:])}")

    @torch.no_grad()
    def encode(self, x: torch.Tensor, prefix: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Return the tokens of images (B, 3, H, W) in [0, 1]: one (B, s, s) int64 tensor per scale.

        With ``prefix`` (the first S scales' tokens, for example a hidden
        code), those scales are forced to the given tokens and the finer
        scales quantize the residual that the prefix leaves.
        """
        self._check_images(x)
        param = next(self.parameters())
        f = self.encoder(x.to(param.device, param.dtype))
        return self.quantize(f, prefix=prefix).tokens

    def latent_from_tokens(self, tokens: list[torch.Tensor], n_scales: int | None = None, latent_hw: tuple[int, int] | None = None) -> torch.Tensor:
        """Return the summed quantized latent (B, C, h, w) of the first ``n_scales`` scales' tokens."""
        n = len(tokens) if n_scales is None else n_scales
        if not 1 <= n <= len(tokens):
            raise ValueError(f"n_scales must be in 1..{len(tokens)}, got {n_scales}")
        if latent_hw is None:
            latent_hw = (self.cfg.latent_size, self.cfg.latent_size)
            if len(tokens) == len(self.cfg.scales):
                latent_hw = tuple(tokens[-1].shape[-2:])
        latent_hw = tuple(latent_hw)

        device = self.codebooks.device
        f_hat = torch.zeros(tokens[0].shape[0], self.cfg.code_dim, *latent_hw, device=device)
        for k in range(n):
            e = self._lookup(k, tokens[k].to(device, torch.long))
            f_hat = f_hat + self.refine[k](self._upsample(e, latent_hw).to(f_hat.dtype))
        return f_hat

    @torch.no_grad()
    def decode(self, tokens: list[torch.Tensor], n_scales: int | None = None) -> torch.Tensor:
        """Decode tokens to images (B, 3, R, R) in [0, 1] using the first ``n_scales`` scales (all given by default)."""
        param = next(self.decoder.parameters())
        f_hat = self.latent_from_tokens(tokens, n_scales)
        return self.decoder(f_hat.to(param.dtype)).float().clamp(0.0, 1.0)

    def hidden_code(self, tokens: list[torch.Tensor]) -> np.ndarray:
        """Pack the first ``hidden_scales`` scales' tokens into bits (B, code_bits) uint8.

        Bit order: scales coarse to fine, tokens row-major inside a scale,
        each token's ``token_bits`` bits most significant first. At the
        default config that is 1 + 4 + 9 = 14 tokens × 10 bits = 140 bits.
        """
        c = self.cfg
        if len(tokens) < c.hidden_scales:
            raise ValueError(f"need at least {c.hidden_scales} scales of tokens, got {len(tokens)}")
        flat = torch.cat([t.reshape(t.shape[0], -1) for t in tokens[: c.hidden_scales]], dim=1).cpu().numpy()
        if flat.shape[1] != c.code_tokens:
            raise ValueError(f"hidden-code scales contain {flat.shape[1]} tokens, expected {c.code_tokens} (tokens at R={c.resolution})")
        shifts = np.arange(c.token_bits - 1, -1, -1)
        bits = (flat[:, :, None] >> shifts[None, None, :]) & 1
        return bits.reshape(flat.shape[0], -1).astype(np.uint8)

    def tokens_from_code(self, bits: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        """Unpack hidden-code bits (B, code_bits) into ``hidden_scales`` tensors (B, s, s) int64."""
        c = self.cfg
        arr = np.asarray(bits.cpu() if isinstance(bits, torch.Tensor) else bits).astype(np.int64)
        if arr.ndim == 1:
            arr = arr[None]
        if arr.shape[1] != c.code_bits:
            raise ValueError(f"expected {c.code_bits} code bits per image, got {arr.shape[1]}")
        weights = 1 << np.arange(c.token_bits - 1, -1, -1)
        values = (arr.reshape(arr.shape[0], c.code_tokens, c.token_bits) * weights).sum(-1)
        if values.max(initial=0) >= c.codebook_size:
            raise ValueError(f"invalid hidden code: a token index is >= the codebook size {c.codebook_size}")

        tokens, start = [], 0
        for s in c.scales[: c.hidden_scales]:
            tokens.append(torch.from_numpy(values[:, start : start + s * s].reshape(-1, s, s).copy()))
            start += s * s
        return tokens

    @torch.no_grad()
    def code_embedding(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """Return the L2-normalized code embedding (B, D) float32 from the first ``hidden_scales`` scales' tokens.

        It depends on those tokens alone, so an exact hidden code gives the
        exact embedding; finer scales in ``tokens`` are ignored.
        """
        c = self.cfg
        latent = self.latent_from_tokens(tokens[: c.hidden_scales], latent_hw=(c.latent_size, c.latent_size))
        param = next(self.code_head.parameters())
        embedding = self.code_head(latent.to(param.dtype)).float()
        return F.normalize(embedding, dim=1).cpu()


# ---- weight files -----------------------------------------------------------------

_TRAINING_ONLY = ("ema_cluster_size", "ema_embed_sum", "ema_initialized", "code_head.predictor.")


def inference_state_dict(model: MultiScaleVQ, half: bool = True) -> dict[str, torch.Tensor]:
    """Return the weights needed for inference; conv weights in fp16 when ``half``, codebooks kept fp32."""
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(_TRAINING_ONLY):
            continue
        value = value.detach().cpu()
        if half and value.is_floating_point() and key != "codebooks":
            value = value.half()
        state[key] = value
    return state


def save_tokenizer(model: MultiScaleVQ, path: str | Path, metadata: dict | None = None, half: bool = True) -> Path:
    """Write a shipped weight file: config, inference weights and metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": model.cfg.model_dump(),
            "state_dict": inference_state_dict(model, half=half),
            "metadata": metadata or {},
        },
        path,
    )
    return path


def _resolve(path_or_version: str | Path) -> Path:
    candidate = Path(path_or_version)
    if candidate.suffix == ".pt" or candidate.exists():
        return candidate
    from hcr_model.bundle import weights_dir

    return weights_dir(str(path_or_version)) / "tokenizer.pt"


def load_tokenizer(path_or_version: str | Path = DEFAULT_VERSION, device: str | torch.device = "cpu") -> MultiScaleVQ:
    """Load a tokenizer weight file (or a shipped version name such as "v1") in eval mode, fp32."""
    path = _resolve(path_or_version)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer weights not found: {path}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a tokenizer weight file (format {blob.get('format')!r})")

    model = MultiScaleVQ(TokenizerConfig(**blob["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(_TRAINING_ONLY)]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    model.ema_initialized.fill_(True)
    logger.debug("loaded tokenizer from %s", path)
    return model.to(device).eval().requires_grad_(False)


def tokenizer_metadata(path_or_version: str | Path = DEFAULT_VERSION) -> dict:
    """Return the metadata a tokenizer weight file stores (training options such as ``distill``, steps, minutes)."""
    path = _resolve(path_or_version)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer weights not found: {path}")
    return dict(torch.load(path, map_location="cpu", weights_only=True).get("metadata", {}))
