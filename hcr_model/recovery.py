"""Mask-conditioned recovery Transformer over the tokenizer's scale pyramid.

The input is the whole token pyramid, coarsest scale first (1, 2, 3, 4, 6, 8,
12, 16 tokens per side: 530 positions). Scales 1..S carry the trusted hidden
code from the payload. Finer scales carry the received image's tokens,
computed with the code as the teacher-forced prefix, except under the
tampering mask, where they are replaced by a [MASK] token. Every position also
gets a state embedding (code, received, recovered, masked), a scale embedding
and a Fourier embedding of its cell centre, so positions line up across scales.

Inference is next-scale prediction: scale k inside the mask is predicted from
the recovered coarser scales and the unmasked received tokens of all scales,
written back, and then scale k + 1 is predicted. Training uses the same input
layout with a random recovered depth (`compose_inputs`), so each inference step
looks like a training sample.

Token-level masks use the any-overlap rule: a token is masked when any pixel of
its cell is masked. Cell (i, j) of scale s covers rows
[floor(i R / s), ceil((i + 1) R / s)) and the same columns. This is what
`adaptive_max_pool2d` computes, and it also handles scales that do not divide R
(3, 6, 12 at R = 256).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hcr_model.restoration_blend import blend_with_inpainting
from hcr_model.restoration_refiner import refine

logger = logging.getLogger(__name__)

# Per-position states fed to the state embedding.
STATE_CODE = 0  # trusted hidden-code token (scales 1..S)
STATE_RECEIVED = 1  # received image's token outside the mask
STATE_RECOVERED = 2  # inside the mask, already predicted (teacher-forced in training)
STATE_MASKED = 3  # inside the mask, not predicted yet: input is [MASK]
N_STATES = 4


@dataclass
class RecoveryConfig:
    """Shape of the recovery Transformer; stored inside its weights file."""

    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16)  # tokens per side, coarsest first
    n_code_scales: int = 3  # S: scales carried by the payload's hidden code
    vocab_size: int = 1024  # tokenizer codebook size; [MASK] is index vocab_size
    dim: int = 128
    depth: int = 4  # Transformer blocks
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    fourier_bands: int = 8  # frequencies per axis of the position features

    def __post_init__(self) -> None:
        self.scales = tuple(int(s) for s in self.scales)
        if not 0 < self.n_code_scales < len(self.scales):
            raise ValueError(f"n_code_scales must be in 1..{len(self.scales) - 1}, got {self.n_code_scales}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    @property
    def seq_len(self) -> int:
        return sum(s * s for s in self.scales)


@dataclass
class PyramidLayout:
    """Index bookkeeping of the flattened pyramid: scale k occupies [starts[k], starts[k + 1])."""

    scales: tuple[int, ...]
    starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = [0]
        for s in self.scales:
            self.starts.append(self.starts[-1] + s * s)

    def slice(self, k: int) -> slice:
        return slice(self.starts[k], self.starts[k + 1])

    def scale_index(self) -> torch.Tensor:
        """(L,) int64: the scale index of each flattened position."""
        return torch.cat([torch.full((s * s,), k, dtype=torch.long) for k, s in enumerate(self.scales)])


def flatten_pyramid(tokens: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-scale maps [(B, s, s), ...] into (B, L), row-major per scale."""
    return torch.cat([t.reshape(t.shape[0], -1) for t in tokens], dim=1)


def split_pyramid(flat: torch.Tensor, scales: tuple[int, ...]) -> list[torch.Tensor]:
    """Invert `flatten_pyramid`: (B, L) to [(B, s, s), ...]."""
    layout = PyramidLayout(tuple(scales))
    return [flat[:, layout.slice(k)].reshape(flat.shape[0], s, s) for k, s in enumerate(scales)]


def token_masks(mask: torch.Tensor, scales: tuple[int, ...], n_code_scales: int) -> list[torch.Tensor]:
    """Downsample a pixel mask to every scale with the any-overlap rule.

    mask: (B, 1, H, W) bool (or float, > 0.5 counts as masked).
    Returns [(B, s, s) bool, ...]; the code scales are never masked because
    the payload, not the image, supplies them.
    """
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    pixels = mask.float()
    masks = []
    for k, s in enumerate(scales):
        if k < n_code_scales:
            masks.append(torch.zeros(mask.shape[0], s, s, dtype=torch.bool, device=mask.device))
        else:
            masks.append(F.adaptive_max_pool2d(pixels, s)[:, 0] > 0)
    return masks


def compose_inputs(
    tokens: torch.Tensor,
    masked: torch.Tensor,
    depth: torch.Tensor,
    scale_of_position: torch.Tensor,
    n_code_scales: int,
    mask_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Build the model input for one step of next-scale recovery.

    tokens: (B, L) int64, the pyramid as far as it is known: code, received
      tokens, and inside the mask the recovered tokens of scales < depth.
      Values at masked positions of scales >= depth are never read.
    masked: (B, L) bool, the token-level mask.
    depth: (B,) int64, number of scales already known everywhere (recovered).
    scale_of_position: (L,) int64 from `PyramidLayout.scale_index`.
    Returns inputs (B, L) with [MASK] at every masked position of a scale
    >= depth, states (B, L), and the positions still to predict (B, L) bool.
    """
    pending = masked & (scale_of_position[None, :] >= depth[:, None])
    inputs = torch.where(pending, torch.full_like(tokens, mask_id), tokens)

    is_code_scale = (scale_of_position < n_code_scales)[None, :].expand_as(masked)
    states = torch.where(is_code_scale, STATE_CODE, STATE_RECEIVED)
    states = torch.where(masked, STATE_RECOVERED, states)
    states = torch.where(pending, STATE_MASKED, states)
    return inputs, states.long(), pending


def _fourier_positions(scales: tuple[int, ...], bands: int) -> torch.Tensor:
    """(L, 4 * bands) sin/cos features of each cell centre in [0, 1] coordinates."""
    rows = []
    for s in scales:
        centres = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        y, x = torch.meshgrid(centres, centres, indexing="ij")
        rows.append(torch.stack([y.reshape(-1), x.reshape(-1)], dim=1))
    coords = torch.cat(rows)  # (L, 2)
    freqs = math.pi * (2.0 ** torch.arange(bands, dtype=torch.float32))  # (bands,)
    angles = coords[:, :, None] * freqs[None, None, :]  # (L, 2, bands)
    return torch.cat([angles.sin(), angles.cos()], dim=2).reshape(coords.shape[0], -1)


class _Block(nn.Module):
    """Pre-norm Transformer block with bidirectional attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class RecoveryTransformer(nn.Module):
    """Predicts the tokens under a mask from the hidden code and the unmasked tokens."""

    def __init__(self, config: RecoveryConfig | None = None) -> None:
        super().__init__()
        self.config = config or RecoveryConfig()
        cfg = self.config
        self.layout = PyramidLayout(cfg.scales)

        self.token_embed = nn.Embedding(cfg.vocab_size + 1, cfg.dim)  # last row is [MASK]
        self.state_embed = nn.Embedding(N_STATES, cfg.dim)
        self.scale_embed = nn.Embedding(len(cfg.scales), cfg.dim)
        self.position_proj = nn.Linear(4 * cfg.fourier_bands, cfg.dim)
        self.blocks = nn.ModuleList(_Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)

        self.register_buffer("scale_of_position", self.layout.scale_index(), persistent=False)
        self.register_buffer("position_features", _fourier_positions(cfg.scales, cfg.fourier_bands), persistent=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, inputs: torch.Tensor, states: torch.Tensor, select: torch.Tensor | None = None) -> torch.Tensor:
        """inputs, states: (B, L) int64. Returns logits (B, L, vocab_size).

        With `select` (B, L) bool, returns logits (M, vocab_size) of the M
        selected positions only, which saves the output layer on the rest.
        """
        x = self.token_embed(inputs) + self.state_embed(states)
        x = x + self.scale_embed(self.scale_of_position)[None] + self.position_proj(self.position_features)[None]
        for block in self.blocks:
            x = block(x)
        if select is not None:
            x = x[select]
        return self.head(self.norm(x))

    @torch.no_grad()
    def restore_tokens(
        self,
        code_tokens: list[torch.Tensor],
        received_tokens: list[torch.Tensor],
        mask: torch.Tensor,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Predict the tokens under the mask, one scale at a time.

        code_tokens: the S hidden-code scales [(B, s, s) int64, ...] from the payload.
        received_tokens: all K scales of `tokenizer.encode(received, prefix=code_tokens)`.
        mask: (B, 1, R, R) bool, True where the image was edited.
        temperature 0 takes the most likely token; above 0 samples, optionally
        among the top_k tokens, drawing from `generator` (on the model's device).
        Returns all K scales; tokens outside the mask are the received ones.
        """
        tokens, _ = self.restore_distributions(code_tokens, received_tokens, mask, temperature, top_k, generator)
        return tokens

    @torch.no_grad()
    def restore_distributions(
        self,
        code_tokens: list[torch.Tensor],
        received_tokens: list[torch.Tensor],
        mask: torch.Tensor,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[list[torch.Tensor], dict[int, torch.Tensor]]:
        """Run `restore_tokens` and also return each predicted scale's token probabilities.

        Returns (tokens, probabilities), where probabilities[k] is (B, s, s, V)
        for every scale index k that had a masked position (temperature 1, no
        top-k, whatever the sampling settings).
        """
        cfg = self.config
        if len(received_tokens) != len(cfg.scales):
            raise ValueError(f"received_tokens has {len(received_tokens)} scales, the model expects {len(cfg.scales)}")
        if len(code_tokens) < cfg.n_code_scales:
            raise ValueError(f"code_tokens has {len(code_tokens)} scales, the hidden code needs {cfg.n_code_scales}")

        device = self.scale_of_position.device
        pyramid = [t.to(device) for t in code_tokens[: cfg.n_code_scales]] + [
            t.to(device) for t in received_tokens[cfg.n_code_scales :]
        ]
        tokens = flatten_pyramid(pyramid).long()
        masked = flatten_pyramid(token_masks(mask.to(device), cfg.scales, cfg.n_code_scales))
        probabilities = self._fill_scales(
            tokens, masked, range(cfg.n_code_scales, len(cfg.scales)), temperature, top_k, generator
        )
        return split_pyramid(tokens, cfg.scales), probabilities

    @torch.no_grad()
    def generate(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Generate n token pyramids from scratch: every position masked, every scale predicted.

        Training shows the model fully masked samples with a random depth, so
        it has learnt the unconditional next-scale distribution too.
        """
        cfg = self.config
        device = self.scale_of_position.device
        tokens = torch.zeros(n, cfg.seq_len, dtype=torch.long, device=device)
        masked = torch.ones(n, cfg.seq_len, dtype=torch.bool, device=device)
        self._fill_scales(tokens, masked, range(len(cfg.scales)), temperature, top_k, generator)
        return split_pyramid(tokens, cfg.scales)

    def _fill_scales(
        self,
        tokens: torch.Tensor,
        masked: torch.Tensor,
        scale_range: range,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
    ) -> dict[int, torch.Tensor]:
        """Predict the masked tokens of each scale in `scale_range` in order, writing into `tokens`.

        Returns the softmax (B, s, s, V) of every scale index that was predicted.
        """
        cfg = self.config
        probabilities = {}
        for k in scale_range:
            where = self.layout.slice(k)
            if not masked[:, where].any():
                continue
            depth = torch.full((tokens.shape[0],), k, dtype=torch.long, device=tokens.device)
            inputs, states, _ = compose_inputs(
                tokens, masked, depth, self.scale_of_position, cfg.n_code_scales, cfg.mask_id
            )
            select = torch.zeros_like(masked)
            select[:, where] = True
            logits = self(inputs, states, select).float().reshape(tokens.shape[0], -1, cfg.vocab_size)  # (B, s*s, V)
            predicted = sample_tokens(logits, temperature, top_k, generator)
            tokens[:, where] = torch.where(masked[:, where], predicted, tokens[:, where])
            side = cfg.scales[k]
            probabilities[k] = logits.softmax(dim=-1).reshape(tokens.shape[0], side, side, cfg.vocab_size)
        return probabilities


def sample_tokens(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per position from logits (B, N, V): argmax at temperature 0, else sample."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    scaled = logits / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = scaled.softmax(dim=-1).reshape(-1, scaled.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def feather_weights(mask: torch.Tensor, band_px: int) -> torch.Tensor:
    """(B, 1, H, W) float: 1 at the mask's inner edge, falling linearly to 0 at band_px pixels deep.

    Zero outside the mask and deeper than band_px inside it. Distance is the
    chessboard distance to the nearest unmasked pixel, found by repeated 3x3
    dilation of the outside.
    """
    inside = mask.float()
    outside = 1.0 - inside
    weights = torch.zeros_like(inside)
    reached = outside
    for step in range(1, band_px + 1):
        grown = F.max_pool2d(reached, 3, stride=1, padding=1)
        ring = (grown - reached) * inside  # pixels exactly `step` px inside the mask
        weights = weights + ring * (1.0 - (step - 1) / band_px)
        reached = grown
    return weights


def fill_from_boundary(values: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill unknown pixels smoothly from the known ones with a pull-push pyramid.

    values: (B, C, H, W), read only where known; known: (B, 1, H, W) bool.
    Pull: halve the resolution with weighted averages until one side is 1.
    Push: going back up, each pixel keeps its own value in proportion to its
    known weight and takes the upsampled coarser fill for the rest. Known
    pixels keep their values. With no known pixel in an image, the fill is 0.
    """
    weights = known.to(values.dtype)
    return _pull_push(values * weights, weights)


def _pull_push(weighted: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    own = weighted / weights.clamp(min=1e-6)
    if min(weighted.shape[-2:]) <= 1:
        return own
    coarse = _pull_push(F.avg_pool2d(weighted, 2), F.avg_pool2d(weights, 2))
    up = F.interpolate(coarse, size=weighted.shape[-2:], mode="bilinear", align_corners=False)
    share = weights.clamp(max=1.0)
    return share * own + (1.0 - share) * up


def composite(
    received: torch.Tensor, decoded: torch.Tensor, mask: torch.Tensor, band_px: int | None = None
) -> torch.Tensor:
    """Keep received pixels outside the mask and decoded pixels inside it, matched at the edge.

    received, decoded: (B, 3, H, W) in [0, 1]; mask: (B, 1, H, W) bool.
    The decoder's colours drift from the real image, which leaves a seam at
    the mask edge. So the received-minus-decoded difference on the authentic
    pixels outside the mask is filled smoothly into the mask
    (`fill_from_boundary`) and added to the decoded pixels there.
    band_px None applies the correction in the whole mask. A number fades it
    from 1 at the edge to 0 at band_px pixels deep (`feather_weights`), and 0
    turns it off. Tampered pixels inside the mask are never mixed in, and
    pixels outside the mask are returned bit-identical to `received`.
    """
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    inner = decoded
    if band_px is None or band_px > 0:
        correction = fill_from_boundary(received - decoded, ~mask)
        weights = mask.to(decoded.dtype) if band_px is None else feather_weights(mask, band_px)
        inner = decoded + weights * correction
    return torch.where(mask.expand_as(received), inner.clamp(0.0, 1.0), received)


@torch.no_grad()
def decode_expected(
    tokenizer: nn.Module,
    tokens: list[torch.Tensor],
    probabilities: dict[int, torch.Tensor],
    masks: list[torch.Tensor],
) -> torch.Tensor:
    """Decode with each masked token replaced by its expected codebook vector.

    The expectation of the codebook vector under the predicted distribution
    is the latent that minimises the expected squared error. Where the model
    is unsure, it averages the candidates instead of betting on one, which
    gives a higher PSNR than the most likely token.
    tokens: all K scales; probabilities[k]: (B, s, s, V); masks: [(B, s, s) bool].
    Returns (B, 3, R, R) in [0, 1].
    NOTE: this reads the tokenizer's codebooks, refinement convs and bicubic
    upsampling (`_upsample`) directly, mirroring `latent_from_tokens`.
    """
    codebooks = tokenizer.codebooks  # (K, V, C)
    latent_hw = tuple(tokens[-1].shape[-2:])
    latent = None
    for k, indices in enumerate(tokens):
        vectors = codebooks[k][indices.to(codebooks.device).long()]  # (B, s, s, C)
        if k in probabilities:
            expected = probabilities[k].to(codebooks.dtype) @ codebooks[k]  # (B, s, s, C)
            vectors = torch.where(masks[k].to(codebooks.device)[..., None], expected, vectors)
        contribution = tokenizer.refine[k](tokenizer._upsample(vectors.permute(0, 3, 1, 2), latent_hw))
        latent = contribution if latent is None else latent + contribution
    decoder_dtype = next(tokenizer.decoder.parameters()).dtype
    return tokenizer.decoder(latent.to(decoder_dtype)).float().clamp(0.0, 1.0)


@torch.no_grad()
def restore_image(
    tokenizer: nn.Module,
    model: RecoveryTransformer,
    received: torch.Tensor,
    code_tokens: list[torch.Tensor],
    mask: torch.Tensor,
    band_px: int | None = None,
    expected: bool = True,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    blend: bool = True,
    refiner: nn.Module | None = None,
) -> torch.Tensor:
    """Restore the masked region of received images at the working resolution.

    received: (B, 3, R, R) in [0, 1]; code_tokens: the payload's S scales;
    mask: (B, 1, R, R) bool. With `expected` (the default), masked positions
    decode to their expected codebook vectors (`decode_expected`), else to
    the chosen tokens. The decoded image is composited into the received one
    (`composite`). With `blend` (the default), the result is then blended
    with a Telea inpainting by distance from the mask edge
    (`blend_with_inpainting`). A `refiner` (`restoration_refiner`) then
    corrects the blend inside the mask. Returns (B, 3, R, R): received pixels outside
    the mask (bit-identical), restored pixels inside it. Resizing back to the
    input's full resolution is the caller's job.
    """
    if mask.dtype != torch.bool:
        mask = mask > 0.5
    cfg = model.config
    received_tokens = tokenizer.encode(received, prefix=code_tokens)
    tokens, probabilities = model.restore_distributions(
        code_tokens, received_tokens, mask, temperature, top_k, generator
    )
    if expected:
        masks = token_masks(mask, cfg.scales, cfg.n_code_scales)
        decoded = decode_expected(tokenizer, tokens, probabilities, masks)
    else:
        decoded = tokenizer.decode(tokens).clamp(0.0, 1.0)
    restored = composite(received, decoded.to(received.device, received.dtype), mask, band_px)
    if not blend:
        return restored
    blended = blend_with_inpainting(restored, received, mask)
    if refiner is None:
        return blended
    return refine(refiner, received, restored, blended, mask)


def save_recovery(model: RecoveryTransformer, path: str | Path, metadata: dict | None = None) -> None:
    """Write the weights file: config, state dict and free-form metadata (training run, metrics)."""
    payload = {"config": asdict(model.config), "state_dict": model.state_dict(), "metadata": metadata or {}}
    torch.save(payload, Path(path))


def _resolve_path(path_or_version: str | Path) -> Path:
    """Map a shipped version name ("v1") to its weights file; leave file paths as they are."""
    path = Path(path_or_version)
    if path.suffix or path.exists():
        return path
    from hcr_model.bundle import weights_dir

    return weights_dir(str(path_or_version)) / "recovery.pt"


def load_recovery(path_or_version: str | Path = "v1", map_location: str | torch.device = "cpu") -> RecoveryTransformer:
    """Load a weights file written by `save_recovery` (a file path, or a shipped version name such as "v1")."""
    path = _resolve_path(path_or_version)
    if not path.is_file():
        raise FileNotFoundError(f"recovery weights not found: {path}; train them with `hcr train recovery`")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = RecoveryTransformer(RecoveryConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    logger.info("loaded recovery Transformer from %s", path)
    return model.eval()
