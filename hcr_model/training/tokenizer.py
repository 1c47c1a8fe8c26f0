"""Train the multi-scale residual VQ-VAE tokenizer (`hcr train tokenizer`).

Each step trains on random photo crops: mostly small crops (``--crop-size``)
and every ``--full-every``-th step a batch of full R × R crops, so that the
scales that only exist at R (12 and 16 at R = 256) are trained too. Losses:
L1 and image-gradient L1 on pixels, commitment to the EMA codebooks, the
refinement loss of each scale's upsampled contribution, and (unless
``--no-distill``) a cosine loss that makes the hidden-code prefix predict
MobileNetV2's pooled ImageNet features of the same crop, centred by their
running mean (``--distill-target``). Quantizer dropout
decodes a share of each batch from a random prefix of scales.

Training resumes from ``OUT/last.pt``; ``--minutes`` is the total budget
across resumes. ``--export PATH`` writes the shipped weight file at the end.

``--init FILE --decoder-only`` fine-tunes the decoder of a shipped tokenizer
and freezes the encoder, codebooks and refinement convs. Every token, and so
every hidden code already embedded in protected images, stays the same; only
the pixels decoded from the tokens change.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hcr_model.imaging import resize_to
from hcr_model.tokenizer import (
    MultiScaleVQ,
    TokenizerConfig,
    load_tokenizer,
    save_tokenizer,
)
from hcr_model.training.common import (
    Checkpointer,
    MetricLogger,
    WallBudget,
    autocast,
    configure_threads,
    cosine_lr,
    seed_everything,
    select_device,
    setup_logging,
)

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path.home() / ".cache" / "hcr" / "runs" / "tokenizer"


# ---- data -------------------------------------------------------------------------


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize (3, H, W) in [0, 1] with the audit's antialiased bicubic filter, clamped.

    Training on the audit's filter matters: bicubic keeps more fine detail
    than bilinear, and a decoder trained on bilinear crops scored 0.5 dB lower
    on the audit's canonical images than on bilinear ones.
    """
    return resize_to(x[None], size)[0].clamp(0.0, 1.0)


def _to_chw_float(image) -> torch.Tensor:
    """Convert a PIL image, an (H, W, 3) uint8 array or a (3, H, W) tensor to (3, H, W) float in [0, 1]."""
    if isinstance(image, torch.Tensor):
        x = image.float()
        return x / 255.0 if image.dtype == torch.uint8 else x
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return torch.from_numpy(np.array(array[..., :3], copy=True)).permute(2, 0, 1).float() / 255.0


def cache_photo(photo: torch.Tensor, max_short: int) -> torch.Tensor:
    """Downscale a photo (3, H, W) in [0, 1] to a shorter side of at most ``max_short`` and return it as uint8."""
    h, w = photo.shape[-2:]
    scale = max_short / min(h, w)
    if scale < 1.0:
        photo = _resize(photo, (max(1, round(h * scale)), max(1, round(w * scale))))
    return (photo.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def canonical(photo: torch.Tensor, resolution: int) -> torch.Tensor:
    """Squash a photo (3, H, W) to the canonical (3, R, R) float grid, as audits do."""
    x = photo.float() / 255.0 if photo.dtype == torch.uint8 else photo.float()
    return _resize(x, (resolution, resolution)).clamp(0, 1)


def fixture_photos() -> list[torch.Tensor]:
    """Photos that ship inside the scikit-image and scikit-learn wheels, for development runs."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
    photos = [_to_chw_float(getattr(skimage.data, name)()) for name in names]
    photos += [_to_chw_float(image) for image in load_sample_images().images]
    return photos


def load_split(source: str, split: str) -> list[torch.Tensor]:
    """Load a split's photos as (3, H, W) float tensors: the benchmark photos or the wheel fixtures."""
    if source == "fixtures":
        return fixture_photos()
    from PIL import Image

    from hcr_model.data.photos import load_photos

    photos = []
    for record in load_photos(split):
        with Image.open(record.file) as image:
            photos.append(_to_chw_float(image))
    return photos


class CropSampler:
    """Draws augmented square crops in [0, 1] from cached uint8 photos.

    At audit time a photo is squashed to R × R, so a crop carries about the
    detail of the canonical image when the photo is first scaled to a shorter
    side between R and 2R. Crops are drawn at that pixel density, flipped and
    colour-jittered.
    """

    def __init__(self, photos: list[torch.Tensor], resolution: int, rng: random.Random, jitter: float = 0.1) -> None:
        if not photos:
            raise ValueError("no training photos: build the dataset with `hcr data build` or pass --data fixtures")
        self.photos = photos
        self.resolution = resolution
        self.rng = rng
        self.jitter = jitter

    def crop(self, size: int) -> torch.Tensor:
        """Return one augmented crop (3, size, size)."""
        photo = self.photos[self.rng.randrange(len(self.photos))]
        h, w = photo.shape[-2:]
        short = min(h, w)

        target_short = self.rng.uniform(self.resolution, max(self.resolution, min(2 * self.resolution, short)))
        window = max(1, min(round(size * short / target_short), h, w))
        top = self.rng.randrange(h - window + 1)
        left = self.rng.randrange(w - window + 1)
        x = _resize(photo[:, top : top + window, left : left + window].float() / 255.0, (size, size))

        if self.rng.random() < 0.5:
            x = x.flip(-1)
        if self.jitter > 0:
            x = self._colour_jitter(x)
        return x.clamp(0, 1)

    def _colour_jitter(self, x: torch.Tensor) -> torch.Tensor:
        j = self.jitter
        x = x * self.rng.uniform(1 - j, 1 + j)
        mean = x.mean()
        x = (x - mean) * self.rng.uniform(1 - j, 1 + j) + mean
        grey = x.mean(dim=0, keepdim=True)
        return (x - grey) * self.rng.uniform(1 - j, 1 + j) + grey

    def batch(self, batch_size: int, size: int) -> torch.Tensor:
        return torch.stack([self.crop(size) for _ in range(batch_size)])


# ---- losses and metrics -----------------------------------------------------------


def gradient_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance between horizontal and vertical finite differences: a cheap edge-sharpness term."""
    dx = (pred[..., :, 1:] - pred[..., :, :-1]) - (target[..., :, 1:] - target[..., :, :-1])
    dy = (pred[..., 1:, :] - pred[..., :-1, :]) - (target[..., 1:, :] - target[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (B,) of images in [0, 1]."""
    mse = (pred.clamp(0, 1) - target).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10.0 * torch.log10(mse)


def usage_stats(counts: torch.Tensor) -> tuple[int, float]:
    """Return (entries used, perplexity) of one scale's token counts (K,)."""
    total = counts.sum()
    if total == 0:
        return 0, 0.0
    p = counts.float() / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())


@torch.no_grad()
def evaluate(model: MultiScaleVQ, images: torch.Tensor, device: torch.device, batch_size: int = 4) -> dict[str, float]:
    """Measure PSNR (all scales and hidden-code prefix) and per-scale usage on canonical images (N, 3, R, R)."""
    model.eval()
    cfg = model.cfg
    full, prefix = [], []
    counts = torch.zeros(len(cfg.scales), cfg.codebook_size, dtype=torch.long)
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device)
        tokens = model.encode(x)
        full.append(psnr(model.decode(tokens), x).cpu())
        prefix.append(psnr(model.decode(tokens, n_scales=cfg.hidden_scales), x).cpu())
        for k, t in enumerate(tokens):
            counts[k] += torch.bincount(t.flatten().cpu(), minlength=cfg.codebook_size)
    model.train()

    result = {"val_psnr": float(torch.cat(full).mean()), "val_psnr_code": float(torch.cat(prefix).mean())}
    for k, s in enumerate(cfg.scales):
        used, perplexity = usage_stats(counts[k])
        result[f"val_used_s{s}"] = used
        result[f"val_ppl_s{s}"] = perplexity
    return result


# ---- training ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hcr train tokenizer",
        description="Train the multi-scale residual VQ-VAE tokenizer; resumes from OUT/last.pt.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, default=DEFAULT_OUT, help="run folder for checkpoints and metrics.jsonl")
    run.add_argument("--minutes", type=float, default=60.0, help="total wall-clock training budget in minutes, across resumes")
    run.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop after this many steps; the learning-rate schedule then follows the steps (0: only the wall budget stops training)",
    )
    run.add_argument("--seed", type=int, default=0, help="random seed")
    run.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    run.add_argument("--device", type=str, default=None, help="torch device (default: cuda when present, else cpu)")
    run.add_argument("--export", type=Path, default=None, help="write the shipped weight file (fp16 weights, fp32 codebooks) here at the end")
    run.add_argument("--init", type=str, default=None, help="start a new run from this tokenizer weight file or shipped version (default: random init)")
    run.add_argument(
        "--decoder-only",
        action="store_true",
        help="train the decoder alone; encoder, codebooks and refinement stay frozen, so the tokens do not change",
    )

    data = p.add_argument_group("data")
    data.add_argument("--data", choices=("photos", "fixtures"), default="photos", help="benchmark photos (train split) or the wheel fixture photos")
    data.add_argument("--resolution", type=int, default=256, help="working resolution R in pixels")
    data.add_argument("--crop-size", type=int, default=128, help="side of the small training crops in pixels")
    data.add_argument("--batch-size", type=int, default=8, help="small crops per step")
    data.add_argument("--full-batch-size", type=int, default=2, help="R × R crops per full-size step")
    data.add_argument("--full-every", type=int, default=3, help="every N-th step trains on R × R crops (0: never)")

    model = p.add_argument_group("model (ignored when resuming: the checkpoint's config wins)")
    model.add_argument("--code-dim", type=int, default=32, help="latent and codebook channels")
    model.add_argument("--channels", type=str, default="32,48,96,160", help="conv widths at R/2, R/4, R/8, R/16")

    optim = p.add_argument_group("optimization and losses")
    optim.add_argument("--lr", type=float, default=4e-4, help="peak AdamW learning rate (cosine schedule over the wall budget)")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    optim.add_argument("--grad-weight", type=float, default=0.5, help="weight of the image-gradient L1 loss")
    optim.add_argument("--commit-weight", type=float, default=0.25, help="weight of the commitment loss")
    optim.add_argument("--refine-weight", type=float, default=1.0, help="weight of the per-scale refinement loss")
    optim.add_argument("--distill-weight", type=float, default=0.2, help="weight of the cosine distillation loss")
    optim.add_argument("--no-distill", action="store_true", help="turn semantic distillation off (ablation)")
    optim.add_argument(
        "--distill-target",
        choices=("centred", "raw"),
        default="centred",
        help="centred: subtract a running mean of the teacher features before the cosine (default); raw: the features as they are",
    )
    optim.add_argument("--teacher-size", type=int, default=160, help="input side of the MobileNetV2 teacher in pixels")
    optim.add_argument("--drop-prob", type=float, default=0.3, help="share of images decoded from a random prefix of scales (quantizer dropout)")

    codebook = p.add_argument_group("codebook health")
    codebook.add_argument("--restart-every", type=int, default=25, help="steps between dead-codebook-entry restarts")
    codebook.add_argument(
        "--dead-share",
        type=float,
        default=0.1,
        help="an entry is dead below this share of the uniform EMA assignment count (tokens per step / codebook size)",
    )

    logs = p.add_argument_group("logging")
    logs.add_argument("--log-every", type=int, default=25, help="steps between loss logs")
    logs.add_argument("--ckpt-every", type=int, default=100, help="steps between checkpoints")
    logs.add_argument("--eval-every", type=int, default=250, help="steps between validation measurements")
    logs.add_argument("--eval-images", type=int, default=24, help="validation photos measured at R × R")
    return p


def centred_teacher_target(target: torch.Tensor, running_mean: torch.Tensor | None, momentum: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (target minus the running mean, updated running mean) for teacher features (B, D).

    MobileNetV2's pooled features are non-negative, so any two photos' features
    share a large common direction: the mean direction alone already scores
    a mean cosine of 0.67 with them (measured on 128-pixel crops of the 46
    validation photos). A raw cosine loss is then mostly met by
    predicting that mean, and teaches the code little about how photos
    differ. Subtracting a running mean (an EMA over batches, because the R × R
    steps hold only 2 crops) leaves the part that differs between photos.
    """
    batch_mean = target.mean(dim=0).detach()
    mean = batch_mean if running_mean is None else momentum * running_mean + (1.0 - momentum) * batch_mean
    return target - mean, mean


def _train_step(model, teacher, batch, args, device, generator, teacher_mean=None):
    """Run one forward pass and the losses.

    Returns (loss tensor, scalars to log, forward output, updated running mean of the teacher features).
    """
    n_scales = len(model.cfg.scales)
    b = batch.shape[0]
    keep = torch.full((b,), n_scales, dtype=torch.long)
    dropped = torch.rand(b, generator=generator) < args.drop_prob
    keep[dropped] = torch.randint(1, n_scales, (int(dropped.sum()),), generator=generator)

    with autocast(device):
        out = model(batch, keep_scales=keep, update_codebooks=not args.decoder_only)
        recon = out.reconstruction.float()
        l1 = (recon - batch).abs().mean()
        grad = gradient_l1(recon, batch)
        loss = l1 + args.grad_weight * grad + args.commit_weight * out.commitment + args.refine_weight * out.refine_loss

        distill = torch.zeros(())
        if teacher is not None:
            with torch.no_grad():
                target = teacher.embed(batch, size=args.teacher_size).float()
                if args.distill_target == "centred":
                    target, teacher_mean = centred_teacher_target(target, teacher_mean)
            distill = 1.0 - F.cosine_similarity(out.teacher_prediction.float(), target.float(), dim=1).mean()
            loss = loss + args.distill_weight * distill

    full = ~dropped
    scalars = {
        "loss": float(loss.detach()),
        "l1": float(l1.detach()),
        "grad": float(grad.detach()),
        "commit": float(out.commitment.detach()),
        "refine": float(out.refine_loss.detach()),
        "distill": float(distill.detach()),
    }
    if full.any():
        scalars["psnr"] = float(psnr(recon.detach()[full], batch[full]).mean())
    return loss, scalars, out, teacher_mean


@dataclass
class TrainState:
    """Everything a checkpoint restores: model, optimizer, step, time spent and the data RNGs."""

    model: MultiScaleVQ
    optimizer: torch.optim.Optimizer
    step: int
    budget: WallBudget
    rng: random.Random  # crop sampler
    generator: torch.Generator  # quantizer dropout
    teacher_mean: torch.Tensor | None = None  # running mean of the teacher features (1280,), for centred distillation


def _restore(args: argparse.Namespace, ckpt: Checkpointer, device: torch.device) -> TrainState:
    """Resume from the run folder's checkpoint, or build a new model from the CLI config."""
    state = ckpt.load()
    rng = random.Random(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    if state is not None:
        model = MultiScaleVQ(TokenizerConfig(**state["config"]))
        model.load_state_dict(state["model"])
        rng.setstate(state["sampler_rng"])
        generator.set_state(state["generator"])
    elif args.decoder_only and args.init is None:
        raise SystemExit("--decoder-only needs --init FILE (a trained tokenizer) or a run folder to resume")
    elif args.init is not None:
        model = load_tokenizer(args.init).requires_grad_(True)
        logger.info("initialized from %s", args.init)
    else:
        channels = tuple(int(c) for c in args.channels.split(","))
        model = MultiScaleVQ(TokenizerConfig(resolution=args.resolution, code_dim=args.code_dim, channels=channels))
    model.to(device).train()

    parameters = model.parameters()
    if args.decoder_only:
        # Everything upstream of the decoder decides the tokens: freeze it.
        model.requires_grad_(False)
        model.decoder.requires_grad_(True)
        parameters = model.decoder.parameters()
    optimizer = torch.optim.AdamW(parameters, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    if state is None:
        return TrainState(model, optimizer, 0, WallBudget(args.minutes), rng, generator)
    optimizer.load_state_dict(state["optimizer"])
    budget = WallBudget(args.minutes, spent_seconds=float(state["spent_seconds"]))
    teacher_mean = state.get("teacher_mean")
    if teacher_mean is not None:
        teacher_mean = teacher_mean.to(device)
    return TrainState(model, optimizer, int(state["step"]), budget, rng, generator, teacher_mean)


def _save(ckpt: Checkpointer, st: TrainState, args: argparse.Namespace) -> None:
    ckpt.save(
        {
            "config": st.model.cfg.model_dump(),
            "model": st.model.state_dict(),
            "optimizer": st.optimizer.state_dict(),
            "step": st.step,
            "spent_seconds": st.budget.spent,
            "sampler_rng": st.rng.getstate(),
            "generator": st.generator.get_state(),
            "teacher_mean": st.teacher_mean,
            "args": {k: str(v) for k, v in vars(args).items()},
        }
    )


def _schedule_progress(st: TrainState, args: argparse.Namespace) -> float:
    """Return how far the learning-rate schedule is, in [0, 1].

    With ``--max-steps`` the schedule follows the steps (or the wall budget if
    that ends first), so two runs of the same step count anneal alike however
    loaded the machine was: an ablation compares like with like.
    """
    if args.max_steps:
        return max(st.step / args.max_steps, st.budget.progress)
    return st.budget.progress


def _format(result: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in result.items())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    configure_threads(args.threads)
    seed_everything(args.seed)
    device = select_device(args.device)

    ckpt = Checkpointer(args.out)
    st = _restore(args, ckpt, device)
    model, cfg = st.model, st.model.cfg
    logger.info("tokenizer: %.2fM parameters, config %s", sum(p.numel() for p in model.parameters()) / 1e6, cfg.model_dump())

    # Photos: the train split for crops, a few validation photos at R for PSNR.
    train_photos = [cache_photo(p, 2 * cfg.resolution) for p in load_split(args.data, "train")]
    val_photos = load_split(args.data, "val")[: args.eval_images]
    val_images = torch.stack([canonical(p, cfg.resolution) for p in val_photos])
    sampler = CropSampler(train_photos, cfg.resolution, st.rng)
    logger.info("data: %d training photos, %d validation photos (%s)", len(train_photos), len(val_images), args.data)

    teacher = None
    if not args.no_distill and not args.decoder_only:
        from hcr_model.semantic import load_mobilenet_v2

        teacher = load_mobilenet_v2(device)

    if not bool(model.ema_initialized):
        with torch.no_grad():
            init_batch = sampler.batch(8, cfg.resolution).to(device)
            model.init_codebooks(model.encoder(init_batch))
        logger.info("initialized codebooks from %d R × R crops", init_batch.shape[0])

    metrics = MetricLogger(args.out, args.log_every)
    counts = torch.zeros(len(cfg.scales), cfg.codebook_size, dtype=torch.long)
    while not st.budget.exhausted() and not (args.max_steps and st.step >= args.max_steps):
        for group in st.optimizer.param_groups:
            group["lr"] = cosine_lr(args.lr, _schedule_progress(st, args))

        full_step = args.full_every > 0 and st.step % args.full_every == 0
        size, count = (cfg.resolution, args.full_batch_size) if full_step else (args.crop_size, args.batch_size)
        batch = sampler.batch(count, size).to(device)

        loss, scalars, out, st.teacher_mean = _train_step(model, teacher, batch, args, device, st.generator, st.teacher_mean)
        st.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        st.optimizer.step()
        st.step += 1

        # Usage is counted on R × R steps only, where every scale has its full size.
        if full_step:
            for k, t in enumerate(out.tokens):
                counts[k] += torch.bincount(t.flatten().cpu(), minlength=cfg.codebook_size)
        if args.restart_every and not args.decoder_only and st.step % args.restart_every == 0:
            scalars["restarted"] = sum(model.restart_dead_codes(out.latent, min_share=args.dead_share))
        metrics.add(items=count, **scalars)

        if st.step % args.log_every == 0:
            usage = {f"used_s{s}": usage_stats(counts[k])[0] for k, s in enumerate(cfg.scales)}
            metrics.flush(st.step, st.budget, lr=st.optimizer.param_groups[0]["lr"], **usage)
            counts.zero_()
        if st.step % args.eval_every == 0:
            result = evaluate(model, val_images, device)
            logger.info("step %d validation %s", st.step, _format(result))
            metrics.record(st.step, **result)
        if st.step % args.ckpt_every == 0:
            _save(ckpt, st, args)

    _save(ckpt, st, args)
    result = evaluate(model, val_images, device)
    metrics.record(st.step, final=True, **result)
    logger.info("finished at step %d after %.1f min: %s", st.step, st.budget.spent / 60, _format(result))

    if args.export is not None:
        metadata = {"steps": st.step, "train_minutes": round(st.budget.spent / 60, 1), "data": args.data, "distill": not args.no_distill, **result}
        if not args.no_distill:
            metadata.update(distill_weight=args.distill_weight, distill_target=args.distill_target)
        if args.init is not None:
            metadata.update(init=str(args.init), decoder_only=bool(args.decoder_only))
        path = save_tokenizer(model.cpu().eval(), args.export, metadata=metadata)
        logger.info("exported tokenizer weights to %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
