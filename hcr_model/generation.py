"""In-generation watermarking: a generator embeds its own coarse tokens as the payload.

A generator that produces images from tokens has the hidden code before the
image exists, so the payload needs no re-encoding of the finished image. The
recovery Transformer run with every position masked is such a generator
(`generate_protected`). Other generators call `embed_generated` as the last
step before they return an image; docs/GENERATION.md shows an example.

NOTE: the tokenizer does not map its own decoded images exactly back to the
same tokens, so encoding a generated image can give coarse tokens that differ
from the embedded code. The payload is still valid and its code is the
generator's; the audit's consistency check compares coarse colours with a
tolerance, not tokens. `scripts/measure_recovery.py` measures how often the
re-encoded code matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from hcr_model.imaging import resize_to, to_canonical
from hcr_model.payload import PayloadCodec
from hcr_model.recovery import RecoveryTransformer
from hcr_model.watermark.base import WatermarkBackend

logger = logging.getLogger(__name__)


@dataclass
class GeneratedBatch:
    """Protected generated images and the payload they carry."""

    images: torch.Tensor  # (B, 3, R, R) in [0, 1], watermarked
    tokens: list[torch.Tensor]  # the generator's full pyramid, (B, s, s) int64 per scale
    code_bits: np.ndarray  # (B, code_bits) uint8, the embedded hidden code
    carrier_bits: np.ndarray  # (B, N) uint8, what the carrier embedded


def pack_code_tokens(code_tokens: list[torch.Tensor], code_bits: int) -> np.ndarray:
    """Pack hidden-code tokens into (B, code_bits) uint8 bits.

    Same order as `MultiScaleVQ.hidden_code`: scales coarse to fine, tokens
    row-major inside a scale, each token's bits most significant first. The
    bits per token are code_bits / number of tokens (10 for 140 bits over the
    1 + 4 + 9 tokens of scales 1, 2 and 3).
    """
    flat = torch.cat([t.reshape(t.shape[0], -1) for t in code_tokens], dim=1).cpu().numpy().astype(np.int64)
    n_tokens = flat.shape[1]
    if code_bits % n_tokens:
        raise ValueError(f"{code_bits} code bits do not split evenly over {n_tokens} tokens")
    token_bits = code_bits // n_tokens
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << token_bits):
        raise ValueError(f"code tokens must be in 0..{(1 << token_bits) - 1} for {token_bits} bits per token")
    shifts = np.arange(token_bits - 1, -1, -1)
    return ((flat[:, :, None] >> shifts) & 1).reshape(flat.shape[0], -1).astype(np.uint8)


@torch.no_grad()
def embed_generated(
    image: torch.Tensor,
    code_tokens: list[torch.Tensor],
    carrier: WatermarkBackend,
    codec: PayloadCodec,
    version: int,
) -> tuple[torch.Tensor, np.ndarray]:
    """Embed a generator's hidden-code tokens into its images before they are returned.

    image: (B, 3, H, W) in [0, 1], any size. At the carrier's resolution the
      carrier embeds directly. At any other size the watermark residual is
      computed on the canonical grid and added at full size, as protection does.
    code_tokens: the first S scales of the tokens the image was generated
      from, [(B, s, s) int64, ...] (scales 1, 2 and 3 for weights v1).
    version: payload version byte of the tokenizer weights (1 for "v1").
    Returns (watermarked images (B, 3, H, W), code bits (B, code_bits) uint8).
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W) in [0, 1], got {tuple(image.shape)}")
    code_bits = pack_code_tokens(code_tokens, codec.code_bits)
    if code_bits.shape[0] != image.shape[0]:
        raise ValueError(f"{code_bits.shape[0]} codes for {image.shape[0]} images")
    carrier_bits = torch.from_numpy(codec.encode_batch(version, code_bits)).to(image.device)

    size = (carrier.resolution, carrier.resolution)
    if tuple(image.shape[-2:]) == size:
        return carrier.embed(image, carrier_bits), code_bits
    canonical = to_canonical(image, carrier.resolution)
    residual = carrier.embed(canonical, carrier_bits) - canonical
    marked = (image + resize_to(residual, tuple(image.shape[-2:]))).clamp(0.0, 1.0)
    return marked, code_bits


@torch.no_grad()
def generate_protected(
    tokenizer: torch.nn.Module,
    model: RecoveryTransformer,
    carrier: WatermarkBackend,
    codec: PayloadCodec,
    n: int,
    seed: int,
    version: int = 1,
    temperature: float = 1.0,
    top_k: int | None = 200,
) -> GeneratedBatch:
    """Generate n images with the recovery Transformer and embed their own coarse tokens.

    Sampling is seeded: the same seed, weights and device give the same images.
    Returns images (n, 3, R, R) in [0, 1] carrying `version | code | MAC`.
    """
    device = model.scale_of_position.device
    generator = torch.Generator(device=device).manual_seed(seed)
    tokens = model.generate(n, temperature=temperature, top_k=top_k, generator=generator)
    images = tokenizer.decode(tokens).clamp(0.0, 1.0)

    code_tokens = tokens[: model.config.n_code_scales]
    protected, code_bits = embed_generated(images, code_tokens, carrier, codec, version)
    carrier_bits = codec.encode_batch(version, code_bits)
    logger.debug("generated %d protected images (seed %d)", n, seed)
    return GeneratedBatch(protected, tokens, code_bits, carrier_bits)
