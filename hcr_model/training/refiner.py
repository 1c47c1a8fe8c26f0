"""Train the restoration refiner (`hcr_model.restoration_refiner`) on restorations of the train split.

The refiner's inputs cost a Transformer pass and a Telea fill each, so they
are computed once and cached. Every train photo's canonical squash and a few
augmented crops (`CropSampler`) are edited with the tampering simulator over
3-40 % of the area, half of them followed by JPEG 75. The shipped tokenizer
and recovery Transformer then restore them with the hidden code of the
unedited image, as the audit does. The val split gets the same treatment on
its canonical squashes and measures the in-mask PSNR of the refined
restoration against the blend it starts from. Training then draws flipped
batches from the cache and minimises the mean over images of log in-mask
MSE, which is what a mean in-mask PSNR rewards.

    python -m hcr_model.training.refiner --minutes 60 --export runs/refiner.pt

A weights folder that contains the exported file as `refiner.pt` restores
with it (`hcr_model.bundle.load_bundle`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hcr_model.bench.attacks import jpeg_pillow
from hcr_model.bench.tampering import random_tamper_batch
from hcr_model.recovery import RecoveryTransformer, load_recovery, restore_image
from hcr_model.restoration_blend import blend_with_inpainting
from hcr_model.restoration_refiner import RefinerConfig, RestorationRefiner, refine, save_refiner
from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer
from hcr_model.training.common import (
    Checkpointer,
    MetricLogger,
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

TRAIN_AREA = (0.03, 0.40)  # share of the image an edit covers in training samples
VAL_AREA = (0.20, 0.30)  # around the benchmark's 25 %
JPEG_PROB = 0.5  # share of edits followed by JPEG 75


@dataclass
class RestorationSet:
    """Cached restorations: uint8 images (N, 3, R, R) and bool masks (N, 1, R, R)."""

    original: torch.Tensor
    received: torch.Tensor
    decoded: torch.Tensor  # `composite` output, before the inpainting blend
    blended: torch.Tensor  # after `blend_with_inpainting`
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.original.shape[0]

    def floats(self, rows) -> tuple[torch.Tensor, ...]:
        """Return (original, received, decoded, blended) as float in [0, 1] and the mask, for `rows`."""
        images = tuple(t[rows].float() / 255.0 for t in (self.original, self.received, self.decoded, self.blended))
        return (*images, self.mask[rows])


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu()


@torch.no_grad()
def restore_samples(
    tokenizer: MultiScaleVQ, model: RecoveryTransformer, clean: torch.Tensor, area: tuple[float, float], rng: np.random.Generator
) -> RestorationSet:
    """Edit a (B, 3, R, R) batch of clean images and restore it as the audit does; return the uint8 set."""
    edited, mask = random_tamper_batch(clean, rng, area=area)
    jpeg = torch.from_numpy(rng.random(clean.shape[0]) < JPEG_PROB)
    if jpeg.any():
        edited[jpeg] = jpeg_pillow(edited[jpeg], 75)
    mask = mask.bool()
    code = tokenizer.encode(clean)[: model.config.n_code_scales]
    decoded = restore_image(tokenizer, model, edited, code, mask, blend=False)
    blended = blend_with_inpainting(decoded, edited, mask)
    return RestorationSet(_to_uint8(clean), _to_uint8(edited), _to_uint8(decoded), _to_uint8(blended), mask.cpu())


def build_set(
    tokenizer: MultiScaleVQ,
    model: RecoveryTransformer,
    photos: list[torch.Tensor],
    extra_per_photo: int,
    area: tuple[float, float],
    seed: int,
    crops: bool = True,
    batch_size: int = 8,
) -> RestorationSet:
    """Restore every photo's canonical squash and `extra_per_photo` more samples, each after one random edit.

    The extra samples are augmented crops with `crops`, else more edits of the canonical squash.
    """
    resolution = tokenizer.cfg.resolution
    rng = np.random.default_rng(seed)
    cached = [cache_photo(p, 2 * resolution) for p in photos]
    sampler = CropSampler(cached, resolution, random.Random(seed))
    order = [(i, c) for i in range(len(cached)) for c in range(extra_per_photo + 1)]
    # Shuffled, so that splice donors (the next image in a batch) come from other photos.
    random.Random(seed).shuffle(order)

    parts, started = [], time.monotonic()
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        images = []
        for index, crop in chunk:
            if crop == 0 or not crops:
                images.append(canonical(cached[index], resolution))
            else:
                sampler.photos = [cached[index]]
                images.append(sampler.crop(resolution))
        parts.append(restore_samples(tokenizer, model, torch.stack(images), area, rng))
        done = start + len(chunk)
        if (start // batch_size) % 25 == 24 or done == len(order):
            logger.info("restored %d/%d samples (%.2f samples/s)", done, len(order), done / (time.monotonic() - started))
    return RestorationSet(*(torch.cat([getattr(p, name) for p in parts]) for name in ("original", "received", "decoded", "blended", "mask")))


def load_or_build_set(
    tokenizer: MultiScaleVQ, model: RecoveryTransformer, models_digest: str, data: str, split: str,
    extra_per_photo: int, crops: bool, area: tuple[float, float], seed: int, cache_dir: Path,
) -> RestorationSet:
    """Return the cached restorations of a split (see `build_set`), building them on the first call."""
    kind = "crops" if crops else "squashes"
    name = f"{data}-{split}-{kind}{extra_per_photo}-a{area[0]:g}-{area[1]:g}-s{seed}-{models_digest}.pt"
    path = cache_dir / name
    if path.is_file():
        logger.info("loading cached restorations %s", path)
        return RestorationSet(**torch.load(path, weights_only=True))
    photos = load_split(data, split)
    logger.info("restoring %d %s photos x %d samples (cache: %s)", len(photos), split, extra_per_photo + 1, path)
    result = build_set(tokenizer, model, photos, extra_per_photo, area, seed, crops=crops)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(asdict(result), tmp)
    tmp.replace(path)
    return result


def masked_log_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean over images of log(in-mask MSE); output, target (B, 3, R, R), mask (B, 1, R, R) bool."""
    weights = mask.to(output.dtype)
    squared = ((output - target) ** 2 * weights).sum(dim=(1, 2, 3))
    mse = squared / (3.0 * weights.sum(dim=(1, 2, 3)).clamp(min=1.0))
    return torch.log(mse + 1e-5).mean()


def masked_psnr_each(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the (B,) in-mask PSNR in dB of images in [0, 1]."""
    weights = mask.to(output.dtype)
    mse = ((output - target) ** 2 * weights).sum(dim=(1, 2, 3)) / (3.0 * weights.sum(dim=(1, 2, 3)).clamp(min=1.0))
    return -10.0 * torch.log10(mse.clamp(min=1e-10))


@torch.no_grad()
def evaluate(model: RestorationRefiner, samples: RestorationSet, device: torch.device, batch_size: int = 16) -> dict[str, float]:
    """Measure the mean in-mask PSNR (dB) of the refined restoration, and of the blend and the decode it starts from."""
    model.eval()
    scores: dict[str, list[torch.Tensor]] = {"refined_psnr": [], "blended_psnr": [], "decoded_psnr": []}
    for start in range(0, len(samples), batch_size):
        original, received, decoded, blended, mask = (t.to(device) for t in samples.floats(slice(start, start + batch_size)))
        refined = refine(model, received, decoded, blended, mask)
        for name, image in (("refined_psnr", refined), ("blended_psnr", blended), ("decoded_psnr", decoded)):
            scores[name].append(masked_psnr_each(image, original, mask).cpu())
    model.train()
    result = {name: float(torch.cat(values).mean()) for name, values in scores.items()}
    result["gain_db"] = result["refined_psnr"] - result["blended_psnr"]
    return result


def sample_batch(samples: RestorationSet, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Draw a random batch, each sample flipped left-right with probability 1/2."""
    rows = torch.randint(len(samples), (batch_size,), generator=generator)
    tensors = samples.floats(rows)
    flip = torch.rand(batch_size, generator=generator) < 0.5
    return tuple(torch.where(flip[:, None, None, None], t.flip(-1), t) for t in tensors)


def models_digest(version: str) -> str:
    """Return a short SHA-256 digest of a weights version's tokenizer and recovery files, which the caches depend on."""
    from hcr_model.bundle import weights_dir

    folder = weights_dir(version)
    hasher = hashlib.sha256()
    for name in ("tokenizer.pt", "recovery.pt"):
        hasher.update((folder / name).read_bytes())
    return hasher.hexdigest()[:12]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcr train refiner",
        description="Train the restoration refiner on cached restorations of the train split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=None, help="run folder for checkpoints and metrics.jsonl (default: $HCR_CACHE/runs/refiner)")
    p.add_argument("--weights", type=str, default="v1", help="tokenizer and recovery weights: a shipped version name")
    p.add_argument("--minutes", type=float, default=60.0, help="total wall-clock budget in minutes across resumes, caching included")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: only the wall budget stops training)")
    p.add_argument("--data", choices=("photos", "fixtures"), default="photos", help="benchmark photos or the wheel fixture photos")
    p.add_argument("--crops-per-photo", type=int, default=7, help="augmented crops per training photo, besides its canonical squash")
    p.add_argument("--val-samples-per-photo", type=int, default=2, help="edited copies of each validation photo's canonical squash (at least 1)")
    p.add_argument("--batch-size", type=int, default=8, help="samples per step")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (cosine schedule over the budget)")
    p.add_argument("--widths", type=str, default="24,48,96,128", help="U-Net widths per level, comma separated")
    p.add_argument("--downsample", type=int, default=2, help="the U-Net runs at 1/downsample of the 256 px side")
    p.add_argument("--log-every", type=int, default=25, help="steps between loss logs")
    p.add_argument("--eval-every", type=int, default=250, help="steps between validation measurements")
    p.add_argument("--ckpt-minutes", type=float, default=4.0, help="minutes between checkpoints")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    p.add_argument("--device", type=str, default=None, help="torch device (default: cuda when present, else cpu)")
    p.add_argument("--export", type=Path, default=None, help="write the weight file here at the end; a weights folder uses it as refiner.pt")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.val_samples_per_photo < 1:
        parser.error(f"--val-samples-per-photo must be at least 1, got {args.val_samples_per_photo}")
    setup_logging()
    configure_threads(args.threads)
    seed_everything(args.seed)
    device = select_device(args.device)
    from hcr_model.data.build import default_cache

    cache = default_cache()
    out = args.out or cache / "runs" / "refiner"
    budget_start = time.monotonic()

    ckpt = Checkpointer(out)
    state = ckpt.load()
    if state is not None:
        config = RefinerConfig.from_dict(state["config"])
    else:
        config = RefinerConfig(widths=tuple(int(width) for width in args.widths.split(",")), downsample=args.downsample)

    digest = models_digest(args.weights)
    tokenizer = load_tokenizer(args.weights, device=device)
    recovery = load_recovery(args.weights, map_location=device)
    cache_dir = cache / "refiner"
    train = load_or_build_set(
        tokenizer, recovery, digest, args.data, "train", args.crops_per_photo, True, TRAIN_AREA, args.seed, cache_dir
    )
    # Validation edits canonical squashes only, as the benchmark does.
    val = load_or_build_set(
        tokenizer, recovery, digest, args.data, "val", args.val_samples_per_photo - 1, False, VAL_AREA, args.seed + 1, cache_dir
    )
    del tokenizer, recovery
    logger.info("data: %d training and %d validation restorations", len(train), len(val))

    model = RestorationRefiner(config)
    if state is not None:
        model.load_state_dict(state["model"])
    model.to(device).train()
    logger.info("refiner: %.2fM parameters, %s", sum(p.numel() for p in model.parameters()) / 1e6, asdict(config))

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
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
                "models_digest": digest,
                "args": {k: str(v) for k, v in vars(args).items()},
            }
        )

    last_save = time.monotonic()
    while not budget.exhausted() and not (args.max_steps and step >= args.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, step / args.max_steps if args.max_steps else budget.progress)
        original, received, decoded, blended, mask = (t.to(device) for t in sample_batch(train, args.batch_size, generator))
        output = refine(model, received, decoded, blended, mask)
        loss = masked_log_mse(output, original, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        metrics.add(items=args.batch_size, loss=loss.item())

        if step % args.log_every == 0:
            metrics.flush(step, budget, lr=optimizer.param_groups[0]["lr"])
        if step % args.eval_every == 0:
            result = evaluate(model, val, device)
            logger.info("step %d validation %s", step, " ".join(f"{k}={v:.4g}" for k, v in result.items()))
            metrics.record(step, **result)
        if time.monotonic() - last_save > args.ckpt_minutes * 60:
            save()
            last_save = time.monotonic()

    save()
    result = evaluate(model, val, device)
    metrics.record(step, final=True, **result)
    logger.info("finished at step %d after %.1f min: %s", step, budget.spent / 60, " ".join(f"{k}={v:.4g}" for k, v in result.items()))

    if args.export is not None:
        metadata = export_metadata(step, budget, args.batch_size, args.data, device, train_samples=len(train), models_digest=digest, **result)
        args.export.parent.mkdir(parents=True, exist_ok=True)
        save_refiner(model.cpu().eval(), args.export, metadata=metadata)
        logger.info("exported refiner weights to %s", args.export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
