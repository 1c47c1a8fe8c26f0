"""Train the mask-conditioned recovery Transformer (`hcr train recovery`).

Data. The tokenizer is frozen, so token pyramids are computed once and cached
under ``$HCR_CACHE/recovery/``. Every training photo gives its canonical R × R
squash plus augmented crops. Each of these is encoded clean, and once more
after a random edit from the benchmark's tampering generator (3-40 % area,
JPEG 75 after the edit for a share of them). The edited image is encoded with
the clean hidden code as the teacher-forced prefix, as an audit encodes a
received image.

Samples. Each training sample takes one cached pyramid and either
- its tampered version (received tokens from the edited image, mask = the
  edit's token mask), or
- its clean version with a random mask from a bank of generator regions,
  blobs and rectangles (received tokens = clean tokens),
and a random recovered depth d in S..K-1: inside the mask, scales < d hold the
ground-truth tokens (as if recovered) and scales >= d hold [MASK], which is the
input of inference step d. A share of samples is fully masked with d in
0..K-1, which trains the unconditional generator used for in-generation
watermarking. The loss covers the [MASK] positions only: cross-entropy plus the
normalised squared error of the expected codebook vector (which restoration
decodes), averaged over scale d plus half the average over the finer scales.

Training resumes from ``OUT/last.pt``; ``--minutes`` is the total budget across
resumes and includes the one-off token caching.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hcr_model.bench.attacks import jpeg_pillow
from hcr_model.bench.tampering import SHAPES, random_tamper_batch, region_mask
from hcr_model.recovery import (
    RecoveryConfig,
    RecoveryTransformer,
    compose_inputs,
    flatten_pyramid,
    save_recovery,
    split_pyramid,
    token_masks,
)
from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer
from hcr_model.training.common import (
    Checkpointer,
    MetricLogger,
    autocast,
    configure_threads,
    cosine_lr,
    export_metadata,
    resume_optimizer,
    seed_everything,
    select_device,
    setup_logging,
)
from hcr_model.training.tokenizer import CropSampler, cache_photo, canonical, load_split

logger = logging.getLogger(__name__)

MASK_AREA = (0.03, 0.40)  # share of the image covered by a training mask
NEXT_SCALE_WEIGHT = 1.0
FINER_SCALES_WEIGHT = 0.5


def default_cache() -> Path:
    from hcr_model.data.build import default_cache as data_cache

    return data_cache()


# ---- token cache ------------------------------------------------------------------


@dataclass
class TokenSet:
    """Cached pyramids, flattened to L positions (int16 tokens, bool masks)."""

    clean: torch.Tensor  # (N, L) tokens of the clean image
    received: torch.Tensor  # (N, L) tokens of the edited image, clean code as prefix (clean tokens when not edited)
    masked: torch.Tensor  # (N, L) token mask of the edit (any-overlap rule), all False when not edited
    edited: torch.Tensor  # (N,) bool, rows that have an edited encoding


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _photo_image(photo: torch.Tensor, crop_index: int, sampler: CropSampler, resolution: int) -> torch.Tensor:
    """Return crop 0 of a photo as its canonical squash (the audit's input), the others as augmented crops."""
    if crop_index == 0:
        return canonical(photo, resolution)
    sampler.photos = [photo]  # draw from this photo only
    return sampler.crop(resolution)


def encode_photos(
    tokenizer: MultiScaleVQ,
    photos: list[torch.Tensor],
    crops_per_photo: int,
    jpeg_prob: float,
    edit_share: float,
    seed: int,
    device: torch.device,
    batch_size: int = 16,
) -> TokenSet:
    """Encode every photo's squash and crops clean, and a share `edit_share` of them after a random edit.

    Batches mix photos in a shuffled order, so splice donors (the next image
    in the batch) come from other photos.
    """
    cfg = tokenizer.cfg
    rng = np.random.default_rng(seed)
    cached = [cache_photo(p, 2 * cfg.resolution) for p in photos]
    sampler = CropSampler(cached, cfg.resolution, random.Random(seed))
    order = [(i, c) for i in range(len(cached)) for c in range(crops_per_photo + 1)]
    random.Random(seed).shuffle(order)

    clean, received, masked, edited = [], [], [], []
    started = time.monotonic()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = torch.stack([_photo_image(cached[i], c, sampler, cfg.resolution) for i, c in chunk])
        tokens = flatten_pyramid(tokenizer.encode(batch.to(device))).cpu()
        clean.append(tokens.short())

        # Edit a share of the batch; the other rows keep their clean tokens and an empty mask.
        chosen = torch.from_numpy(rng.random(batch.shape[0]) < edit_share)
        rows_received = tokens.clone()
        rows_masked = torch.zeros_like(tokens, dtype=torch.bool)
        if chosen.any():
            tampered, pixel_mask = random_tamper_batch(batch[chosen], rng, area=MASK_AREA)
            jpeg = torch.from_numpy(rng.random(tampered.shape[0]) < jpeg_prob)
            if jpeg.any():
                tampered[jpeg] = jpeg_pillow(tampered[jpeg], 75)
            code = [t.to(device) for t in split_pyramid(tokens[chosen], cfg.scales)[: cfg.hidden_scales]]
            edited_tokens = tokenizer.encode(tampered.to(device), prefix=code)
            rows_received[chosen] = flatten_pyramid(edited_tokens).cpu()
            rows_masked[chosen] = flatten_pyramid(token_masks(pixel_mask.bool(), cfg.scales, cfg.hidden_scales))
        received.append(rows_received.short())
        masked.append(rows_masked)
        edited.append(chosen)

        done = start + len(chunk)
        if (start // batch_size) % 20 == 19 or done == len(order):
            rate = done / (time.monotonic() - started)
            logger.info("encoded %d/%d images (%.2f images/s)", done, len(order), rate)
    return TokenSet(torch.cat(clean), torch.cat(received), torch.cat(masked), torch.cat(edited))


def load_token_cache(
    tokenizer: MultiScaleVQ,
    tokenizer_digest: str,
    source: str,
    split: str,
    crops_per_photo: int,
    jpeg_prob: float,
    edit_share: float,
    seed: int,
    cache_dir: Path,
    device: torch.device,
    max_photos: int = 0,
) -> TokenSet:
    """Return the token pyramids of a split, computing and caching them on first use."""
    name = f"{source}-{split}-tok{tokenizer_digest}-c{crops_per_photo}-j{jpeg_prob:g}-e{edit_share:g}-s{seed}-n{max_photos}.pt"
    path = cache_dir / name
    if path.is_file():
        logger.info("loading cached token pyramids from %s", path)
        return TokenSet(**torch.load(path, weights_only=True))

    photos = load_split(source, split)
    if max_photos:
        photos = photos[:max_photos]
    logger.info("encoding %d photos of the %s source (%s split), %d images each", len(photos), source, split, crops_per_photo + 1)
    tokens = encode_photos(tokenizer, photos, crops_per_photo, jpeg_prob, edit_share, seed, device)

    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(asdict(tokens), tmp)
    tmp.replace(path)
    logger.info("cached %d token pyramids in %s", tokens.clean.shape[0], path)
    return tokens


# ---- masks ------------------------------------------------------------------------


def random_pixel_mask(resolution: int, rng: np.random.Generator) -> np.ndarray:
    """One (R, R) bool mask covering 3-40 % of the image: a generator region, a blob or rectangles."""
    area = float(rng.uniform(*MASK_AREA))
    kind = rng.integers(0, 3)
    if kind == 0:
        return region_mask(resolution, resolution, str(rng.choice(SHAPES)), area, rng)
    if kind == 1:
        # Blob: smooth noise thresholded at the quantile that leaves `area` above it.
        cells = int(rng.integers(2, 7))
        noise = torch.from_numpy(rng.normal(size=(1, 1, cells, cells)).astype(np.float32))
        field = F.interpolate(noise, size=(resolution, resolution), mode="bicubic", align_corners=False)[0, 0].numpy()
        return field > np.quantile(field, 1.0 - area)

    mask = np.zeros((resolution, resolution), dtype=bool)
    n_rects = int(rng.integers(1, 4))
    for _ in range(n_rects):
        mask |= region_mask(resolution, resolution, "rect", area / n_rects, rng)
    return mask


def mask_bank(n: int, config: RecoveryConfig, resolution: int, seed: int) -> torch.Tensor:
    """(n, L) bool token masks from `random_pixel_mask`."""
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, n, 256):  # chunks bound the float copy that pooling makes
        count = min(256, n - start)
        pixels = torch.from_numpy(np.stack([random_pixel_mask(resolution, rng) for _ in range(count)]))[:, None]
        chunks.append(flatten_pyramid(token_masks(pixels, config.scales, config.n_code_scales)))
    return torch.cat(chunks)


# ---- batches ----------------------------------------------------------------------


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, L) int64, [MASK] at every position to predict
    states: torch.Tensor  # (B, L) int64
    pending: torch.Tensor  # (B, L) bool, positions in the loss
    next_scale: torch.Tensor  # (B, L) bool, pending positions of scale d
    targets: torch.Tensor  # (B, L) int64 ground truth (read at pending positions only)


def make_batch(
    clean: torch.Tensor,
    received: torch.Tensor,
    masked: torch.Tensor,
    depth: torch.Tensor,
    config: RecoveryConfig,
    scale_of_position: torch.Tensor,
) -> Batch:
    """Assemble one training batch; ground truth inside the mask is visible only at scales < depth.

    clean, received: (B, L) tokens; masked: (B, L) bool; depth: (B,) int64.
    """
    clean = clean.long()
    received = received.long()
    recovered = masked & (scale_of_position[None] < depth[:, None])
    known = torch.where(recovered, clean, received)
    inputs, states, pending = compose_inputs(
        known, masked, depth, scale_of_position, config.n_code_scales, config.mask_id
    )
    next_scale = pending & (scale_of_position[None] == depth[:, None])
    return Batch(inputs, states, pending, next_scale, clean)


def sample_batch(
    tokens: TokenSet,
    masks: torch.Tensor,
    batch_size: int,
    config: RecoveryConfig,
    scale_of_position: torch.Tensor,
    generator: torch.Generator,
    tampered_prob: float,
    generate_prob: float,
) -> Batch:
    """Draw a random batch: tampered or clean-with-random-mask samples, some fully masked."""
    n_scales = len(config.scales)
    rows = torch.randint(0, tokens.clean.shape[0], (batch_size,), generator=generator)
    clean = tokens.clean[rows]
    received = clean.clone()
    masked = masks[torch.randint(0, masks.shape[0], (batch_size,), generator=generator)].clone()

    use_tampered = (torch.rand(batch_size, generator=generator) < tampered_prob) & tokens.edited[rows]
    received[use_tampered] = tokens.received[rows[use_tampered]]
    masked[use_tampered] = tokens.masked[rows[use_tampered]]

    depth = torch.randint(config.n_code_scales, n_scales, (batch_size,), generator=generator)
    generating = torch.rand(batch_size, generator=generator) < generate_prob
    masked[generating] = True
    received[generating] = clean[generating]
    depth[generating] = torch.randint(0, n_scales, (int(generating.sum()),), generator=generator)

    # A mask can miss every scale >= depth only for tiny masks; those samples add no loss terms.
    return make_batch(clean, received, masked, depth, config, scale_of_position)


class LatentTargets:
    """The tokenizer's codebooks, for the expected-vector loss: (K, V, C) and each scale's mean squared norm (K,)."""

    def __init__(self, codebooks: torch.Tensor) -> None:
        self.codebooks = codebooks.detach().float()
        self.norms = self.codebooks.pow(2).sum(-1).mean(-1).clamp(min=1e-8)

    def to(self, device: torch.device) -> LatentTargets:
        return LatentTargets(self.codebooks.to(device))

    def errors(self, logits: torch.Tensor, targets: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """(M,) squared error of the expected codebook vector against the target token's vector.

        logits (M, V), targets (M,), scales (M,) scale index of each position.
        Each error is divided by its scale's mean squared codebook norm, so the
        small residuals of fine scales weigh as much as the coarse ones.
        """
        probs = logits.float().softmax(-1)
        errors = torch.zeros(targets.shape[0], device=logits.device)
        for k in scales.unique().tolist():
            rows = scales == k
            expected = probs[rows] @ self.codebooks[k]
            target = self.codebooks[k][targets[rows]]
            errors[rows] = (expected - target).pow(2).sum(-1) / self.norms[k]
        return errors


def batch_loss(
    model: RecoveryTransformer, batch: Batch, latent: LatentTargets | None = None, latent_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss on [MASK] positions only: the mean over scale d plus FINER_SCALES_WEIGHT x the mean over finer scales.

    Per position: cross-entropy, plus `latent_weight` x the normalised squared
    error of the expected codebook vector (what `decode_expected` decodes).
    """
    pending = batch.pending
    logits = model(batch.inputs, batch.states, pending)  # (M, V) at the pending positions
    targets = batch.targets[pending]
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    losses = ce
    scalars = {}
    if latent is not None and latent_weight > 0:
        scales = model.scale_of_position[None].expand_as(pending)[pending]
        latent_errors = latent.errors(logits, targets, scales)
        losses = ce + latent_weight * latent_errors
        scalars["latent_mse"] = latent_errors.mean().item()

    is_next = batch.next_scale[pending]
    next_loss = losses[is_next].mean() if is_next.any() else losses.sum() * 0.0
    finer_loss = losses[~is_next].mean() if (~is_next).any() else losses.sum() * 0.0
    loss = NEXT_SCALE_WEIGHT * next_loss + FINER_SCALES_WEIGHT * finer_loss

    with torch.no_grad():
        correct = logits.argmax(-1) == targets
        next_acc = correct[is_next].float().mean().item() if is_next.any() else float("nan")
        next_ce = ce[is_next].mean().item() if is_next.any() else float("nan")
    return loss, {"loss": loss.item(), "ce_next": next_ce, "acc_next": next_acc, **scalars}


@torch.no_grad()
def evaluate(
    model: RecoveryTransformer,
    tokens: TokenSet,
    config: RecoveryConfig,
    device: torch.device,
    latent: LatentTargets,
    batch_size: int = 16,
) -> dict[str, float]:
    """Next-scale cross-entropy, accuracy and expected-vector error on the edited validation samples."""
    model.eval()
    scale_of_position = model.scale_of_position
    results: dict[str, float] = {}
    total_ce, total_correct, total_count, total_latent = 0.0, 0, 0, 0.0
    for k in range(config.n_code_scales, len(config.scales)):
        ce, correct, count, latent_error = 0.0, 0, 0, 0.0
        for start in range(0, tokens.clean.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            depth = torch.full((tokens.clean[rows].shape[0],), k, dtype=torch.long)
            batch = make_batch(
                tokens.clean[rows].to(device),
                tokens.received[rows].to(device),
                tokens.masked[rows].to(device),
                depth.to(device),
                config,
                scale_of_position,
            )
            if not batch.next_scale.any():
                continue
            logits = model(batch.inputs, batch.states, batch.next_scale).float()
            targets = batch.targets[batch.next_scale]
            ce += F.cross_entropy(logits, targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == targets).sum())
            count += targets.numel()
            latent_error += latent.errors(logits, targets, torch.full_like(targets, k)).sum().item()
        scale = config.scales[k]
        results[f"val_acc_s{scale}"] = correct / max(count, 1)
        results[f"val_latent_s{scale}"] = latent_error / max(count, 1)
        total_ce, total_correct, total_count = total_ce + ce, total_correct + correct, total_count + count
        total_latent += latent_error
    results["val_ce_next"] = total_ce / max(total_count, 1)
    results["val_acc_next"] = total_correct / max(total_count, 1)
    results["val_latent_next"] = total_latent / max(total_count, 1)
    model.train()
    return results


# ---- entry point ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcr train recovery",
        description="Train the mask-conditioned recovery Transformer on cached token pyramids of the train split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=None, help="run folder for checkpoints and metrics.jsonl (default: $HCR_CACHE/runs/recovery)")
    p.add_argument("--tokenizer", type=str, default="v1", help="tokenizer weights: a shipped version name or a .pt path")
    p.add_argument("--minutes", type=float, default=40.0, help="total wall-clock budget in minutes across resumes, token caching included")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only the wall budget stops training)")

    p.add_argument("--data", choices=("photos", "fixtures"), default="photos", help="benchmark photos or the wheel fixture photos")
    p.add_argument("--max-photos", type=int, default=0, help="use at most this many photos per split (0: all)")
    p.add_argument("--crops-per-photo", type=int, default=3, help="augmented R x R crops per training photo, besides its canonical squash")
    p.add_argument("--val-crops-per-photo", type=int, default=0, help="augmented crops per validation photo")
    p.add_argument("--edit-share", type=float, default=0.5, help="share of cached training images also encoded after a random edit")
    p.add_argument("--jpeg-prob", type=float, default=0.3, help="share of cached edits followed by JPEG quality 75")

    p.add_argument("--mask-bank", type=int, default=2048, help="random masks drawn once for clean samples")
    p.add_argument("--tampered-prob", type=float, default=0.5, help="share of samples drawn from edited rows that use the cached edited tokens")
    p.add_argument("--generate-prob", type=float, default=0.1, help="share of fully masked samples (unconditional generation)")

    p.add_argument("--batch-size", type=int, default=8, help="samples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine schedule over the wall budget)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--latent-weight", type=float, default=1.0, help="weight of the expected-codebook-vector error beside the cross-entropy")

    p.add_argument("--dim", type=int, default=128, help="Transformer width")
    p.add_argument("--depth", type=int, default=4, help="Transformer blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads")

    p.add_argument("--log-every", type=int, default=20, help="steps between loss logs")
    p.add_argument("--ckpt-minutes", type=float, default=4.0, help="minutes between checkpoints")
    p.add_argument("--eval-every", type=int, default=150, help="steps between validation measurements")

    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", type=str, default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--export", type=Path, default=None, help="write the shipped weight file here at the end")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    configure_threads(args.threads)
    seed_everything(args.seed)
    device = select_device(args.device)
    cache = default_cache()
    out = args.out or cache / "runs" / "recovery"
    budget_start = time.monotonic()

    tokenizer_path = Path(args.tokenizer)
    tokenizer = load_tokenizer(args.tokenizer, device=device)
    if not tokenizer_path.is_file():
        from hcr_model.bundle import weights_dir

        tokenizer_path = weights_dir(args.tokenizer) / "tokenizer.pt"
    digest = _file_digest(tokenizer_path)
    tcfg = tokenizer.cfg

    ckpt = Checkpointer(out)
    state = ckpt.load()
    if state is not None:
        config = RecoveryConfig(**state["config"])
        if state.get("tokenizer_digest") != digest:
            logger.warning("checkpoint was trained with tokenizer %s, now %s", state.get("tokenizer_digest"), digest)
    else:
        config = RecoveryConfig(
            scales=tuple(tcfg.scales),
            n_code_scales=tcfg.hidden_scales,
            vocab_size=tcfg.codebook_size,
            dim=args.dim,
            depth=args.depth,
            heads=args.heads,
        )
    model = RecoveryTransformer(config)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device).train()
    logger.info("recovery Transformer: %.2fM parameters, %s", sum(p.numel() for p in model.parameters()) / 1e6, asdict(config))

    cache_dir = cache / "recovery"
    train_tokens = load_token_cache(
        tokenizer, digest, args.data, "train", args.crops_per_photo, args.jpeg_prob, args.edit_share,
        args.seed, cache_dir, device, args.max_photos,
    )
    # Every validation image is edited: validation measures recovery under real edits only.
    val_tokens = load_token_cache(
        tokenizer, digest, args.data, "val", args.val_crops_per_photo, args.jpeg_prob, 1.0,
        args.seed + 1, cache_dir, device, args.max_photos,
    )
    latent = LatentTargets(tokenizer.codebooks).to(device)
    del tokenizer
    bank_path = cache_dir / f"masks-r{tcfg.resolution}-n{args.mask_bank}-s{args.seed}-{'x'.join(map(str, config.scales))}.pt"
    if bank_path.is_file():
        masks = torch.load(bank_path, weights_only=True)
    else:
        masks = mask_bank(args.mask_bank, config, tcfg.resolution, args.seed)
        torch.save(masks, bank_path)
    logger.info("data: %d training pyramids, %d validation pyramids, %d random masks", len(train_tokens.clean), len(val_tokens.clean), len(masks))

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    # Caching time counts against the budget of the first run only.
    step, budget = resume_optimizer(state, optimizer, generator, args.minutes, budget_start)
    metrics = MetricLogger(out, args.log_every)

    def save() -> None:
        ckpt.save(
            {
                "config": asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "step": step,
                "spent_seconds": budget.spent,
                "tokenizer_digest": digest,
                "args": {k: str(v) for k, v in vars(args).items()},
            }
        )

    scale_of_position = model.scale_of_position
    last_save = time.monotonic()
    while not budget.exhausted() and not (args.max_steps and step >= args.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, budget.progress)
        batch = sample_batch(
            train_tokens, masks, args.batch_size, config, scale_of_position.cpu(), generator, args.tampered_prob, args.generate_prob
        )
        batch = Batch(*(t.to(device) for t in (batch.inputs, batch.states, batch.pending, batch.next_scale, batch.targets)))
        with autocast(device):
            loss, scalars = batch_loss(model, batch, latent, args.latent_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        metrics.add(items=args.batch_size, **{k: v for k, v in scalars.items() if not math.isnan(v)})

        if step % args.log_every == 0:
            metrics.flush(step, budget, lr=optimizer.param_groups[0]["lr"])
        if step % args.eval_every == 0:
            result = evaluate(model, val_tokens, config, device, latent)
            logger.info("step %d validation %s", step, " ".join(f"{k}={v:.4g}" for k, v in result.items()))
            metrics.record(step, **result)
        if time.monotonic() - last_save > args.ckpt_minutes * 60:
            save()
            last_save = time.monotonic()

    save()
    result = evaluate(model, val_tokens, config, device, latent)
    metrics.record(step, final=True, **result)
    logger.info("finished at step %d after %.1f min: %s", step, budget.spent / 60, " ".join(f"{k}={v:.4g}" for k, v in result.items()))

    if args.export is not None:
        metadata = export_metadata(
            step, budget, args.batch_size, args.data, device,
            train_pyramids=int(train_tokens.clean.shape[0]), tokenizer_digest=digest, **result,
        )
        args.export.parent.mkdir(parents=True, exist_ok=True)
        save_recovery(model.cpu().eval(), args.export, metadata=metadata)
        logger.info("exported recovery weights to %s", args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
