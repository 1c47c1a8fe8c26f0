"""Train and calibrate the tamper localizer (`hcr train localizer`).

Training samples are built on the fly, as an audit receives images:

1. fresh augmented train-split tiles (R × R) get a payload of random
   hidden-code bits (`PayloadCodec.encode`), are watermarked by the DCT
   carrier and rounded to uint8, as a saved file stores them;
2. with probability ``--tamper-prob`` a random edit from the benchmark's
   tampering generator (kind, shape and area recorded), else untouched;
3. one attack of the evaluation grid (real Pillow JPEG, Pillow resizing,
   centred crops), or identity. Size-changing attacks are resized back to
   the canonical grid, and the mask follows crops;
4. carrier extraction, payload decoding and the evidence map against the
   bits the audit would use: the re-encoded payload when the ECC decodes,
   else the hard decisions of the soft bits.

Steps 2-4 (the tampering generator, the attacks and the extraction) cost
more than embedding, so each carrier-processed image yields ``--reuse``
training crops.

The loss is BCE + soft Dice against the ground-truth mask. Training crops
``--crop`` pixels (on the 8-pixel block grid) from each R × R sample.

After the wall budget, the threshold and ``min_fraction`` are calibrated on
the validation split (``calibrate``), and ``--export`` writes the weight file.
Training resumes from ``OUT/last.pt``; ``--minutes`` is the total budget
across resumes.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field

from hcr_model.bench.attacks import ATTACKS, Crop
from hcr_model.bench.tampering import TAMPER_KINDS, tamper
from hcr_model.imaging import to_canonical
from hcr_model.keys import SecretKey
from hcr_model.localizer import EVIDENCE_STRIDE, Localizer, LocalizerConfig, evidence_background, save_localizer
from hcr_model.payload import PayloadCodec
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

DEFAULT_OUT = Path.home() / ".cache" / "hcr" / "runs" / "localizer"
PAYLOAD_VERSION = 1  # the payload version byte of weights v1

# Attacks that change every pixel but edit nothing: training teaches the
# localizer to leave images after them unmasked. Crops are left out on
# purpose: they move the block grid, which is the carrier's synchronisation
# problem, and are measured on their own by scripts/measure_localizer.py.
GLOBAL_ATTACKS = (
    "identity",
    "jpeg50",
    "jpeg60",
    "jpeg75",
    "jpeg90",
    "blur0.5",
    "blur1",
    "blur2",
    "noise0.01",
    "noise0.02",
    "noise0.05",
    "resize0.5",
    "resize0.75",
    "resize1.5",
    "brightness+30",
    "brightness-30",
    "contrast+30",
    "contrast-30",
    "jpeg_resize",
)


# The calibration's clean set: the processing the DCT carrier is specified to
# survive. Blur sigma 2 and noise sigma 0.05 are harsher: the watermark itself
# breaks there, so those images train the localizer but do not set min_fraction.
CALIBRATION_ATTACKS = tuple(name for name in GLOBAL_ATTACKS if name not in ("blur2", "noise0.05"))


class LocalizerTrainConfig(BaseModel):
    """Every option of `hcr train localizer`; the field descriptions are the --help text."""

    out: Path = Field(DEFAULT_OUT, description="run folder: checkpoint (last.pt) and metrics.jsonl")
    export: Path | None = Field(None, description="write the calibrated weight file here at the end (e.g. hcr_model/weights/v1/localizer.pt)")
    minutes: float = Field(50.0, description="total training wall time in minutes, summed across resumes")
    resolution: int = Field(256, description="working resolution R in pixels")
    crop: int = Field(128, description="training crop side in pixels (multiple of 16, at most R)")
    batch_size: int = Field(12, description="samples per optimizer step")
    lr: float = Field(2e-3, description="peak AdamW learning rate (linear warmup, cosine decay over the budget)")
    weight_decay: float = Field(1e-4, description="AdamW weight decay")
    dice_weight: float = Field(1.0, description="weight of the soft Dice loss next to BCE")
    hard_weight: float = Field(0.5, description="weight of the hard-negative BCE term (worst 5 % of each image's outside-the-mask pixels)")
    tamper_prob: float = Field(0.7, description="probability that a training sample is tampered (else untouched)")
    identity_prob: float = Field(0.3, description="probability of no attack after the edit (else one drawn from --train-attacks)")
    train_attacks: str = Field(",".join(GLOBAL_ATTACKS[1:]), description="comma-separated attack names (hcr_model.bench.attacks.ATTACKS) drawn uniformly after the edit")
    kind_weights: str = Field("", description="relative sampling weights of tampering kinds, e.g. 'recolor:2,text:2' (unnamed kinds weigh 1; empty: uniform)")
    area_min: float = Field(0.03, description="smallest edited share of the image in training")
    area_max: float = Field(0.35, description="largest edited share of the image in training")
    reuse: int = Field(2, description="training samples drawn from each carrier-processed image: crops of one extraction")
    val_samples: int = Field(48, description="fixed validation samples for the periodic F1 / IoU log")
    calib_tampered: int = Field(400, description="tampered validation samples for threshold calibration")
    calib_clean: int = Field(850, description="untouched validation samples for calibration (identity and the global attacks the carrier is specified to survive)")
    max_fpr: float = Field(0.01, description="calibration: largest pooled pixel false-positive rate on untouched and globally processed images at the mask threshold")
    decision_max_fpr: float = Field(
        0.0025, description="calibration: largest pixel false-positive rate at the decision threshold on the untouched images of each attack on its own"
    )
    clean_quantile: float = Field(0.99, description="calibration: share of clean validation images whose mask fraction must stay below min_fraction")
    log_every: int = Field(20, description="steps between training log lines")
    eval_every: int = Field(150, description="steps between validation passes")
    checkpoint_every: int = Field(50, description="steps between checkpoints")
    threads: int = Field(1, description="torch and OpenCV threads (the shared CPU machine has 2 cores)")
    device: str | None = Field(None, description="torch device; default: cuda when present, else cpu")
    seed: int = Field(0, description="random seed")
    key_seed: str = Field("hcr/localizer-training", description="text hashed into the training key; the localizer is key-agnostic")
    no_train: bool = Field(False, description="skip training and only calibrate and export the checkpoint")
    init: Path | None = Field(None, description="warm start a new run from this checkpoint or weight file (ignored when OUT has a checkpoint)")


def build_parser() -> argparse.ArgumentParser:
    """Build the argparse parser from LocalizerTrainConfig, one --option per field."""
    parser = argparse.ArgumentParser(prog="hcr train localizer", description=__doc__.split("\n\n")[0])
    for name, field in LocalizerTrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        # argparse formats help with %, so a literal % is written %%.
        help_text = f"{field.description} (default: {field.default})".replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(flag, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, default=field.default, help=help_text)
    return parser


def training_key(seed: str) -> SecretKey:
    """Derive a fixed 256-bit key from text: the training key is not a secret."""
    return SecretKey(hashlib.sha256(seed.encode("utf-8")).digest())


# ---- samples --------------------------------------------------------------------


@dataclass
class SampleBatch:
    """Localizer inputs and ground truth for B received images on the canonical grid."""

    image: torch.Tensor  # (B, 3, R, R) float in [0, 1], as the audit receives it
    evidence: torch.Tensor  # (B, 1, R/8, R/8) carrier block disagreement
    mask: torch.Tensor  # (B, 1, R, R) float 0/1, 1 = edited
    kinds: list[str]  # tamper kind per image, "none" when untouched
    attacks: list[str]  # attack name per image
    ecc_ok: np.ndarray  # (B,) bool: the payload passed the ECC
    area: np.ndarray  # (B,) edited share of the pixels before the attack


def _crop_mask(mask: np.ndarray, area: float) -> np.ndarray:
    """Apply Crop(area)'s centred window to an (H, W) mask."""
    height, width = mask.shape
    crop_h, crop_w = Crop(area).window(height, width)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return mask[top : top + crop_h, left : left + crop_w]


def attack_image(image: torch.Tensor, mask: np.ndarray, name: str, resolution: int) -> tuple[torch.Tensor, np.ndarray]:
    """Run attack ``name`` (evaluation form) on (1, 3, R, R) and move the (R, R) mask with it.

    Returns the received image on the canonical grid (1, 3, R, R) and its
    (R, R) bool mask. Resizes do not move content on the canonical grid;
    centred crops do, so the mask gets the same crop and resize.
    """
    attack = ATTACKS[name]
    out = attack.apply(image)
    if attack.changes_size:
        for step in attack.steps:
            if isinstance(step, Crop):
                mask = _crop_mask(mask, step.area)
        out = to_canonical(out, resolution)
        if mask.shape != (resolution, resolution):
            resized = cv2.resize(mask.astype(np.float32), (resolution, resolution), interpolation=cv2.INTER_LINEAR)
            mask = resized >= 0.5
    return out, mask


class SampleMaker:
    """Protect, tamper, attack and extract: builds SampleBatch objects.

    ``tamper_prob`` and ``area`` shape random edits; callers can force a
    kind, an attack or an area per image for measurements.
    """

    def __init__(self, key: SecretKey, resolution: int = 256, n_bits: int = 256, device: torch.device | None = None):
        from hcr_model.watermark.dct import DctCarrier

        self.resolution = resolution
        self.device = device or torch.device("cpu")
        self.carrier = DctCarrier(key, n_bits=n_bits, resolution=resolution)
        self.codec = PayloadCodec(key, n_bits=self.carrier.n_bits)

    @torch.no_grad()
    def protect(self, originals: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Watermark (B, 3, R, R) originals with random payloads.

        Returns the protected images as uint8 (B, 3, R, R), as a saved file
        stores them, and the carrier bits (B, N) uint8.
        """
        codes = rng.integers(0, 2, size=(originals.shape[0], self.codec.code_bits), dtype=np.uint8)
        bits = self.codec.encode_batch(PAYLOAD_VERSION, codes)
        marked = self.carrier.embed(originals.to(self.device), torch.from_numpy(bits).to(self.device))
        protected = (marked.clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        return protected, bits

    @torch.no_grad()
    def make(
        self,
        protected: torch.Tensor,
        rng: np.random.Generator,
        *,
        tamper_prob: float = 0.7,
        kinds: list[str | None] | None = None,
        attacks: list[str] | None = None,
        area: tuple[float, float] = (0.03, 0.35),
        donors: torch.Tensor | None = None,
        kind_probabilities: np.ndarray | None = None,
    ) -> SampleBatch:
        """Build received images from protected uint8 tiles (B, 3, R, R).

        ``kinds[i]`` forces the edit of image i ("none" = untouched, None =
        random with ``tamper_prob``). ``attacks[i]`` names its attack
        (default identity). Splice donors come from ``donors`` (uint8
        (D, 3, H, W)) when given, else from the next tile of the batch.
        ``kind_probabilities`` (one per TAMPER_KINDS entry, summing to 1)
        skews the random kinds. Without it they are drawn uniformly.
        """
        count = protected.shape[0]
        resolution = self.resolution
        as_hwc = protected.permute(0, 2, 3, 1).numpy()
        kinds = kinds if kinds is not None else [None] * count
        attacks = attacks if attacks is not None else ["identity"] * count

        images, masks, kind_names, areas = [], [], [], []
        for i in range(count):
            kind = kinds[i]
            if kind is None:
                kind = str(rng.choice(TAMPER_KINDS, p=kind_probabilities)) if rng.random() < tamper_prob else "none"
            if kind == "none":
                edited, mask, edited_area = as_hwc[i], np.zeros((resolution, resolution), bool), 0.0
            else:
                if donors is not None:
                    donor = donors[int(rng.integers(0, donors.shape[0]))].permute(1, 2, 0).numpy()
                else:
                    donor = as_hwc[(i + 1) % count] if count > 1 else as_hwc[i][::-1, ::-1]
                result = tamper(as_hwc[i], rng, kind=kind, area=float(rng.uniform(*area)), donor=donor)
                edited, mask, edited_area = result.image, result.mask, result.area

            x = torch.from_numpy(np.ascontiguousarray(edited)).permute(2, 0, 1)[None].float() / 255.0
            x, mask = attack_image(x, mask, attacks[i], resolution)
            images.append(x)
            masks.append(mask)
            kind_names.append(kind)
            areas.append(edited_area)

        received = torch.cat(images).to(self.device)
        evidence, ecc_ok = self.evidence(received)
        mask_t = torch.from_numpy(np.stack(masks))[:, None].float()
        return SampleBatch(received.cpu(), evidence.cpu(), mask_t, kind_names, list(attacks), ecc_ok, np.array(areas))

    @torch.no_grad()
    def evidence(self, received: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """Extract and compute the evidence map exactly as the audit does.

        The expected bits are the re-encoded payload when the ECC decodes and
        the hard decisions of the soft bits otherwise. Returns the evidence
        (B, 1, R/8, R/8) float and the (B,) ECC flags.
        """
        extraction = self.carrier.extract(received)
        soft = extraction.soft_bits.float().cpu().numpy()
        decoded = [self.codec.decode(row) for row in soft]
        expected = np.stack(
            [self.codec.reencode(d) if d.ecc_ok else (soft[i] > 0).astype(np.uint8) for i, d in enumerate(decoded)]
        )
        evidence = self.carrier.evidence(extraction, torch.from_numpy(expected).to(received.device))
        return evidence.float(), np.array([d.ecc_ok for d in decoded])


def parse_kind_weights(weights: str) -> np.ndarray | None:
    """Parse 'kind:weight,...' into one probability per TAMPER_KINDS entry; None for an empty string (uniform)."""
    if not weights.strip():
        return None
    values = dict.fromkeys(TAMPER_KINDS, 1.0)
    for item in weights.split(","):
        name, _, weight = item.partition(":")
        name = name.strip()
        if name not in values:
            raise ValueError(f"--kind-weights: unknown tampering kind {name!r}; known: {', '.join(TAMPER_KINDS)}")
        try:
            values[name] = float(weight)
        except ValueError:
            raise ValueError(f"--kind-weights: {item!r} needs a number after the colon, e.g. 'recolor:2'") from None
        if values[name] < 0:
            raise ValueError(f"--kind-weights: the weight of {name} must not be negative")
    probabilities = np.array([values[name] for name in TAMPER_KINDS])
    if probabilities.sum() <= 0:
        raise ValueError("--kind-weights: at least one kind needs a positive weight")
    return probabilities / probabilities.sum()


def random_attacks(count: int, rng: np.random.Generator, names: list[str], identity_prob: float) -> list[str]:
    """Draw one attack name per image: identity with ``identity_prob``, else uniform over ``names``."""
    return ["identity" if rng.random() < identity_prob or not names else str(rng.choice(names)) for _ in range(count)]


def random_crops(batch: SampleBatch, crop: int, reuse: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Cut ``reuse`` crops of side ``crop`` per sample, aligned to the evidence's 8-pixel blocks.

    Returns (images (B*reuse, 3, c, c), evidence (B*reuse, 1, c/8, c/8),
    masks (B*reuse, 1, c, c), background (B*reuse,)), where background is
    the median of the whole image's evidence map, as the audit computes it.
    """
    resolution = batch.image.shape[-1]
    cells = (resolution - crop) // EVIDENCE_STRIDE
    background = evidence_background(batch.evidence).repeat(reuse)
    images, evidence, masks = [], [], []
    for _ in range(reuse):
        for i in range(batch.image.shape[0]):
            top = int(rng.integers(0, cells + 1)) * EVIDENCE_STRIDE
            left = int(rng.integers(0, cells + 1)) * EVIDENCE_STRIDE
            images.append(batch.image[i, :, top : top + crop, left : left + crop])
            masks.append(batch.mask[i, :, top : top + crop, left : left + crop])
            t, l, c = top // EVIDENCE_STRIDE, left // EVIDENCE_STRIDE, crop // EVIDENCE_STRIDE
            evidence.append(batch.evidence[i, :, t : t + c, l : l + c])
    return torch.stack(images), torch.stack(evidence), torch.stack(masks), background


def warm_start(model: Localizer, path: Path) -> None:
    """Initialize ``model`` from a checkpoint or weight file of a narrower localizer.

    Tensors of equal shape are copied. A convolution that gained input
    channels (appended at the end) gets the old weights in its leading
    slice and zeros elsewhere, so the model starts out computing the old
    function.
    """
    record = torch.load(path, map_location="cpu", weights_only=False)
    source = record.get("model") or record.get("state_dict")
    if source is None:
        raise ValueError(f"{path} contains neither a training checkpoint nor a localizer weight file")
    target = model.state_dict()
    copied, widened = 0, 0
    for name, tensor in source.items():
        destination = target.get(name)
        if destination is None or destination.ndim != tensor.ndim:
            continue
        if destination.shape == tensor.shape:
            destination.copy_(tensor)
            copied += 1
        elif all(d >= s for d, s in zip(destination.shape, tensor.shape)):
            destination.zero_()
            destination[tuple(slice(0, s) for s in tensor.shape)].copy_(tensor)
            widened += 1
    model.load_state_dict(target)
    logger.info("warm start from %s: %d tensors copied, %d widened", path, copied, widened)


# ---- data -----------------------------------------------------------------------


class TileStream:
    """Fresh augmented tiles of a split: a new random crop, flip and jitter on every draw."""

    def __init__(self, split: str, resolution: int, rng: np.random.Generator) -> None:
        from hcr_model.data.photos import TileDataset, load_photos

        self.dataset = TileDataset(load_photos(split), resolution=resolution, augment=True)
        self.rng = rng

    def next(self, count: int) -> torch.Tensor:
        """Return ``count`` tiles (count, 3, R, R) float in [0, 1]."""
        # The dataset seeds its draws by (epoch, index): a random epoch per
        # draw gives new crops of the same photos.
        self.dataset.set_epoch(int(self.rng.integers(0, 2**31)))
        index = self.rng.integers(0, len(self.dataset), size=count)
        return torch.stack([self.dataset[int(i)]["image"] for i in index]).float()


def protected_split(maker: SampleMaker, split: str, seed: int, chunk: int = 16) -> torch.Tensor:
    """Protect every fixed (unaugmented) tile of a split; returns uint8 (N, 3, R, R).

    The payloads come from ``seed``, so the same call returns the same tiles.
    """
    from hcr_model.data.photos import TileDataset, load_photos

    dataset = TileDataset(load_photos(split), resolution=maker.resolution, augment=False)
    rng = np.random.default_rng(seed)
    start = time.monotonic()
    protected = []
    for first in range(0, len(dataset), chunk):
        tiles = torch.stack([dataset[i]["image"] for i in range(first, min(first + chunk, len(dataset)))])
        protected.append(maker.protect(tiles, rng)[0])
    logger.info("protected %d %s tiles in %.0f s", len(dataset), split, time.monotonic() - start)
    return torch.cat(protected)


# ---- loss and metrics -----------------------------------------------------------


def localization_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float,
    hard_weight: float = 0.0,
    hard_fraction: float = 0.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """BCE + soft Dice over the batch, plus a hard-negative BCE term. ``logits`` and ``target`` are (B, 1, H, W).

    The hard-negative term is the mean BCE of each image's ``hard_fraction``
    worst outside-the-mask pixels. Plain BCE averages a false region of a
    few percent of the image away, yet such a region is what pushes an
    untouched image over min_fraction.
    """
    bce_map = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    bce = bce_map.mean()
    negatives = (bce_map * (1.0 - target)).flatten(1)
    k = max(1, int(hard_fraction * negatives.shape[1]))
    hard = negatives.topk(k, dim=1).values.mean()
    probability = torch.sigmoid(logits)
    # Dice over the whole batch: untouched samples (empty masks) add only to
    # the denominator, so they push false positives down without a 0/0.
    intersection = (probability * target).sum()
    dice = 1.0 - (2.0 * intersection + 1.0) / (probability.sum() + target.sum() + 1.0)
    loss = bce + dice_weight * dice + hard_weight * hard
    return loss, {"loss": loss.item(), "bce": bce.item(), "dice": dice.item(), "hard_negative": hard.item()}


def pixel_scores(prediction: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Pixel F1, IoU and false-positive rate of bool (B, 1, H, W) masks, pooled over the batch."""
    prediction, target = prediction.bool(), target.bool()
    tp = float((prediction & target).sum())
    fp = float((prediction & ~target).sum())
    fn = float((~prediction & target).sum())
    negatives = float((~target).sum())
    return {
        "f1": 2 * tp / max(2 * tp + fp + fn, 1.0),
        "iou": tp / max(tp + fp + fn, 1.0),
        "fpr": fp / max(negatives, 1.0),
    }


def per_image_scores(prediction: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel F1 and IoU of bool (B, 1, H, W) masks; an empty target and prediction scores 1."""
    prediction, target = prediction.bool().flatten(1), target.bool().flatten(1)
    tp = (prediction & target).sum(1).double()
    fp = (prediction & ~target).sum(1).double()
    fn = (~prediction & target).sum(1).double()
    empty = (tp + fp + fn) == 0
    f1 = torch.where(empty, torch.ones_like(tp), 2 * tp / (2 * tp + fp + fn).clamp(min=1))
    iou = torch.where(empty, torch.ones_like(tp), tp / (tp + fp + fn).clamp(min=1))
    return f1.numpy(), iou.numpy()


@torch.no_grad()
def predict_probability(model: Localizer, image: torch.Tensor, evidence: torch.Tensor, device: torch.device, batch: int = 16) -> torch.Tensor:
    """Run the model in eval mode over (N, 3, R, R) in chunks; returns probabilities (N, 1, R, R) on the CPU."""
    was_training = model.training
    model.eval()
    out = []
    for first in range(0, image.shape[0], batch):
        with autocast(device):
            logits = model(image[first : first + batch].to(device), evidence[first : first + batch].to(device))
        out.append(torch.sigmoid(logits.float()).cpu())
    model.train(was_training)
    return torch.cat(out)


def make_fixed_samples(maker: SampleMaker, pool: torch.Tensor, count: int, seed: int, attacks: list[str], tamper_prob: float, area: tuple[float, float], chunk: int = 16) -> SampleBatch:
    """Build ``count`` reproducible samples from a protected pool (validation and calibration sets)."""
    rng = np.random.default_rng(seed)
    parts = []
    for first in range(0, count, chunk):
        n = min(chunk, count - first)
        index = rng.integers(0, pool.shape[0], size=n)
        names = [attacks[int(rng.integers(0, len(attacks)))] for _ in range(n)]
        parts.append(maker.make(pool[index], rng, tamper_prob=tamper_prob, attacks=names, area=area))
    return concat_samples(parts)


def concat_samples(parts: list[SampleBatch]) -> SampleBatch:
    return SampleBatch(
        image=torch.cat([p.image for p in parts]),
        evidence=torch.cat([p.evidence for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        kinds=[k for p in parts for k in p.kinds],
        attacks=[a for p in parts for a in p.attacks],
        ecc_ok=np.concatenate([p.ecc_ok for p in parts]),
        area=np.concatenate([p.area for p in parts]),
    )


def evaluate(model: Localizer, samples: SampleBatch, device: torch.device, threshold: float = 0.5) -> dict[str, float]:
    """Pixel F1 / IoU on the tampered samples and false-positive rate on the untouched ones."""
    probability = predict_probability(model, samples.image, samples.evidence, device)
    prediction = probability > threshold
    tampered = torch.tensor([k != "none" for k in samples.kinds])
    result: dict[str, float] = {}
    if tampered.any():
        scores = pixel_scores(prediction[tampered], samples.mask[tampered])
        f1, iou = per_image_scores(prediction[tampered], samples.mask[tampered])
        result.update(val_f1=scores["f1"], val_iou=scores["iou"], val_image_f1=float(f1.mean()), val_image_iou=float(iou.mean()))
    if (~tampered).any():
        result["val_clean_fpr"] = pixel_scores(prediction[~tampered], samples.mask[~tampered])["fpr"]
    return result


# ---- calibration ----------------------------------------------------------------

N_BINS = 1000  # probability histogram bins for calibration (threshold resolution 0.001)


def probability_histograms(probability: torch.Tensor, target: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image histograms of (N, 1, H, W) probabilities over N_BINS bins, split by target.

    Returns (positive (N, N_BINS), negative (N, N_BINS)) pixel counts, from
    which every threshold's TP, FP and mask fraction follow without
    keeping the maps.
    """
    bins = (probability.flatten(1) * N_BINS).long().clamp(0, N_BINS - 1)
    positive_mask = target.flatten(1).bool()
    offset = torch.arange(bins.shape[0])[:, None] * N_BINS
    flat = (bins + offset).flatten()
    count = bins.shape[0] * N_BINS
    positive = torch.bincount(flat[positive_mask.flatten()], minlength=count).view(-1, N_BINS)
    negative = torch.bincount(flat[~positive_mask.flatten()], minlength=count).view(-1, N_BINS)
    return positive.numpy(), negative.numpy()


def _pixels_from_bin(histograms: np.ndarray) -> np.ndarray:
    """Return (N_BINS,) pixel counts in bins k and above, summed over images.

    Bins k and above contain the probabilities >= k / N_BINS: the mask
    ``probability > k / N_BINS`` up to exact ties.
    """
    return np.cumsum(histograms.sum(0)[::-1])[::-1]


@dataclass
class ThresholdCurves:
    """Calibration statistics at every threshold k / N_BINS, k = 0 .. N_BINS - 1."""

    f1: np.ndarray  # pooled pixel F1 on tampered images
    iou: np.ndarray  # pooled pixel IoU on tampered images
    clean_fpr: np.ndarray  # pooled pixel false-positive rate on clean images
    clean_fpr_worst: np.ndarray  # the largest pixel false-positive rate of one attack's clean images
    min_fraction: np.ndarray  # clean_quantile of the clean images' mask fraction, plus one pixel
    detection: np.ndarray  # share of tampered images whose mask fraction reaches min_fraction


def _fractions_from_bin(histograms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Return (N, N_BINS): each image's mask fraction at every threshold."""
    counts = histograms[0] + histograms[1]
    above = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    return above / counts.sum(axis=1, keepdims=True)


def threshold_curves(
    tampered: tuple[np.ndarray, np.ndarray],
    clean: tuple[np.ndarray, np.ndarray],
    clean_quantile: float,
    pixels: int,
    clean_attacks: list[str] | None = None,
) -> ThresholdCurves:
    """Compute F1, IoU, clean FPR, min_fraction and detection for every threshold.

    The mask is ``probability > k / N_BINS``, which bins k and above
    approximate up to exact ties. `clean_attacks` names each clean image's
    processing, for the worst attack's FPR (without it, the pooled FPR).
    """
    tp = _pixels_from_bin(tampered[0])
    fp = _pixels_from_bin(tampered[1])
    fn = tampered[0].sum() - tp
    # "higher" takes an observed fraction at or above the quantile, so at
    # least clean_quantile of the images lie strictly below it + 1 pixel.
    min_fraction = np.quantile(_fractions_from_bin(clean), clean_quantile, axis=0, method="higher") + 1.0 / pixels
    detection = (_fractions_from_bin(tampered) >= min_fraction[None]).mean(axis=0)
    clean_fpr = _pixels_from_bin(clean[1]) / max(clean[1].sum(), 1)
    worst = clean_fpr
    for attack in sorted(set(clean_attacks or [])):
        rows = np.array([name == attack for name in clean_attacks])
        worst = np.maximum(worst, _pixels_from_bin(clean[1][rows]) / max(clean[1][rows].sum(), 1))
    return ThresholdCurves(
        f1=2 * tp / np.maximum(2 * tp + fp + fn, 1),
        iou=tp / np.maximum(tp + fp + fn, 1),
        clean_fpr=clean_fpr,
        clean_fpr_worst=worst,
        min_fraction=min_fraction,
        detection=detection,
    )


def choose_thresholds(curves: ThresholdCurves, max_fpr: float, decision_max_fpr: float | None = None) -> tuple[int, int]:
    """Pick (decision bin, mask bin): the decision under a per-attack FPR limit, the mask under a pooled one.

    The decision threshold maximizes pooled F1 × detection, so the mask both
    fits the edits and clears min_fraction. It is chosen among thresholds
    whose clean pixel FPR is at most ``decision_max_fpr`` (default
    ``max_fpr``) under every attack on its own, so blur or downscaling alone
    cannot push the FPR past the limit. That budget can be stricter than the
    mask's, because the audit draws masks at the mask threshold and the
    decision threshold only decides. A high decision threshold leaves few
    clean pixels above it, so min_fraction (the smallest edit counted) is small.
    The mask threshold maximizes pooled F1 among thresholds whose pooled
    clean FPR is at most ``max_fpr``. It sits lower, where a few clean images
    get large false regions, so it is only good for drawing masks of images
    already judged edited.
    """
    decision_max_fpr = max_fpr if decision_max_fpr is None else decision_max_fpr
    worst = np.flatnonzero(curves.clean_fpr_worst <= decision_max_fpr)
    pooled = np.flatnonzero(curves.clean_fpr <= max_fpr)
    worst, pooled = worst[worst >= 1], pooled[pooled >= 1]  # threshold 0 would flag every pixel
    if worst.size == 0:
        raise RuntimeError(f"no threshold keeps every attack's clean false-positive rate at or below {decision_max_fpr}")
    decision = int(worst[np.argmax((curves.f1 * curves.detection)[worst])])
    mask = int(pooled[np.argmax(curves.f1[pooled])])
    return decision, mask


def calibrate(
    model: Localizer,
    maker: SampleMaker,
    pool: torch.Tensor,
    config: LocalizerTrainConfig,
    device: torch.device,
) -> tuple[float, float, dict[str, Any]]:
    """Calibrate the threshold and min_fraction on validation samples.

    For every threshold, min_fraction is the ``clean_quantile`` quantile of
    the mask fraction over untouched and globally processed validation
    images, plus one pixel, so that share of them stays below it. The
    threshold maximizes pooled pixel F1 × the share of tampered images whose
    mask reaches that min_fraction, among thresholds whose clean pixel
    false-positive rate is at most ``decision_max_fpr`` under every attack.
    Returns (threshold, min_fraction, calibration record). The record also
    carries the best-F1 ``mask_threshold``.
    """
    area = (config.area_min, config.area_max)
    tampered = make_fixed_samples(maker, pool, config.calib_tampered, config.seed + 101, ["identity", "jpeg75", "jpeg90", "jpeg50"], 1.0, area)
    clean = make_fixed_samples(maker, pool, config.calib_clean, config.seed + 202, list(CALIBRATION_ATTACKS), 0.0, area)

    tampered_hist = probability_histograms(predict_probability(model, tampered.image, tampered.evidence, device), tampered.mask)
    clean_hist = probability_histograms(predict_probability(model, clean.image, clean.evidence, device), clean.mask)
    curves = threshold_curves(tampered_hist, clean_hist, config.clean_quantile, config.resolution**2, clean.attacks)
    decision, mask = choose_thresholds(curves, config.max_fpr, config.decision_max_fpr)
    min_fraction = float(curves.min_fraction[decision])
    clean_fractions = _fractions_from_bin(clean_hist)[:, decision]

    record = {
        "split": "val",
        "rule": f"min_fraction(t): {config.clean_quantile} quantile of the clean images' mask fraction at t + 1 pixel; "
        f"threshold: max pooled pixel F1 x share of tampered images reaching min_fraction(t), "
        f"s.t. pixel FPR <= {config.decision_max_fpr} on the clean images of every attack; "
        f"mask_threshold: max pooled pixel F1 s.t. pooled pixel FPR <= {config.max_fpr} on clean images",
        "tampered_images": len(tampered.kinds),
        "tampered_attacks": "identity, jpeg50, jpeg75, jpeg90",
        "tampered_area": list(area),
        "clean_images": len(clean.kinds),
        "clean_attacks": ", ".join(CALIBRATION_ATTACKS),
        "threshold": decision / N_BINS,
        "val_pixel_f1": float(curves.f1[decision]),
        "val_pixel_iou": float(curves.iou[decision]),
        "val_clean_pixel_fpr": float(curves.clean_fpr[decision]),
        "val_clean_pixel_fpr_worst_attack": float(curves.clean_fpr_worst[decision]),
        "val_clean_below_min_fraction": float((clean_fractions < min_fraction).mean()),
        "val_tampered_at_or_above_min_fraction": float(curves.detection[decision]),
        "mask_threshold": mask / N_BINS,
        "mask_val_pixel_f1": float(curves.f1[mask]),
        "mask_val_pixel_iou": float(curves.iou[mask]),
        "mask_val_clean_pixel_fpr": float(curves.clean_fpr[mask]),
    }
    logger.info("calibration: %s", record)
    return decision / N_BINS, min_fraction, record


# ---- training loop --------------------------------------------------------------


def parse_config(argv: list[str] | None) -> LocalizerTrainConfig:
    args = build_parser().parse_args(argv)
    values = {name: value for name, value in vars(args).items() if value is not None}
    return LocalizerTrainConfig(**values)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    setup_logging()
    configure_threads(config.threads)
    cv2.setNumThreads(max(config.threads, 1))
    seed_everything(config.seed)
    device = select_device(config.device)
    if config.crop % 16 or not 16 <= config.crop <= config.resolution:
        raise SystemExit(f"--crop must be a multiple of 16 in [16, {config.resolution}], got {config.crop}")
    attack_names = [name for name in config.train_attacks.split(",") if name]
    unknown = [name for name in attack_names if name not in ATTACKS]
    if unknown:
        raise SystemExit(f"unknown --train-attacks {unknown}; known: {', '.join(ATTACKS)}")

    key = training_key(config.key_seed)
    maker = SampleMaker(key, resolution=config.resolution, device=device)
    out = Path(config.out)
    checkpoint = Checkpointer(out)
    state = checkpoint.load()

    model_config = state["model_config"] if state else None
    model = Localizer(LocalizerConfig(widths=tuple(model_config["widths"])) if model_config else LocalizerConfig())
    if state:
        model.load_state_dict(state["model"])
    elif config.init is not None:
        warm_start(model, config.init)
    model.to(device).train()
    logger.info("localizer: %d parameters on %s, config %s", sum(p.numel() for p in model.parameters()), device, config.model_dump_json())

    rng = np.random.default_rng(config.seed + 13)
    train_tiles = TileStream("train", config.resolution, rng)
    val_pool = protected_split(maker, "val", config.seed + 1)
    area = (config.area_min, config.area_max)
    kind_probabilities = parse_kind_weights(config.kind_weights)
    val_samples = make_fixed_samples(maker, val_pool, config.val_samples, config.seed + 7, ["identity", "jpeg75"], config.tamper_prob, area)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    budget = WallBudget(config.minutes)
    if state:
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        budget = WallBudget(config.minutes, spent_seconds=float(state["spent_seconds"]))
        rng.bit_generator.state = state["sample_rng"]

    def save() -> None:
        checkpoint.save(
            {
                "model_config": {"widths": list(model.config.widths)},
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "spent_seconds": budget.spent,
                "sample_rng": rng.bit_generator.state,
                "config": config.model_dump(mode="json"),
            }
        )

    metrics = MetricLogger(out, config.log_every)
    per_batch = max(1, config.batch_size // config.reuse)
    while not config.no_train and not budget.exhausted():
        lr = cosine_lr(config.lr, budget.progress)
        for group in optimizer.param_groups:
            group["lr"] = lr

        started = time.monotonic()
        protected, _ = maker.protect(train_tiles.next(per_batch), rng)
        attacks = random_attacks(per_batch, rng, attack_names, config.identity_prob)
        batch = maker.make(protected, rng, tamper_prob=config.tamper_prob, attacks=attacks, area=area, kind_probabilities=kind_probabilities)
        image, evidence, target, background = random_crops(batch, config.crop, config.reuse, rng)
        data_seconds = time.monotonic() - started

        with autocast(device):
            logits = model(image.to(device), evidence.to(device), background.to(device))
        loss, scalars = localization_loss(logits.float(), target.to(device), config.dice_weight, config.hard_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1

        metrics.add(items=image.shape[0], lr=lr, data_s=data_seconds, step_s=time.monotonic() - started, **scalars)
        if step % config.log_every == 0:
            metrics.flush(step, budget)
        if step % config.eval_every == 0:
            scores = evaluate(model, val_samples, device)
            logger.info("step %d validation %s", step, " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            metrics.record(step, **scores)
        if step % config.checkpoint_every == 0:
            save()

    if not config.no_train:
        save()
        logger.info("training done: %d steps in %.1f min", step, budget.spent / 60)
    scores = evaluate(model, val_samples, device)
    logger.info("final validation %s", " ".join(f"{k}={v:.4f}" for k, v in scores.items()))

    if config.export is not None:
        threshold, min_fraction, record = calibrate(model, maker, val_pool, config, device)
        record["training"] = {"steps": step, "minutes": round(budget.spent / 60, 1), "device": str(device), "threads": config.threads}
        save_localizer(
            config.export,
            model.cpu(),
            threshold=threshold,
            min_fraction=min_fraction,
            version="v1",
            calibration=record,
            metrics=scores,
        )
        logger.info("exported %s (threshold %.3f, min_fraction %.5f)", config.export, threshold, min_fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
