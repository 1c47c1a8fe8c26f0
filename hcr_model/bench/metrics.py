"""Benchmark metrics, per image where that is meaningful.

Images are float (B, 3, H, W) in [0, 1]; masks are (B, 1, H, W) or (B, H, W),
bool or float (probabilities are thresholded at `threshold`, 0.5 by default).
Per-image metrics return a (B,) float64 tensor. PSNR and SSIM come from
torchmetrics and pytorch-msssim, the masked SSIM map from scikit-image, and
pixel AUROC from torchmetrics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim as _msssim_ssim
from skimage.metrics import structural_similarity
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.image import peak_signal_noise_ratio


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"expected two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _as_mask(mask: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) or (B, H, W), bool or float -> (B, H, W) bool."""
    if mask.ndim == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask must have one channel, got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, 1, H, W) or (B, H, W), got {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask > threshold


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return the PSNR in dB of each image against `reference`; inf for identical images."""
    _check_pair(images, reference)
    return peak_signal_noise_ratio(
        images.double(), reference.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Return the SSIM of each image (Gaussian window 11 px, sigma 1.5); 1.0 for identical images.

    Needs both sides of the image to be at least 11 px.
    """
    _check_pair(images, reference)
    return _msssim_ssim(images.double(), reference.double(), data_range=1.0, size_average=False)


def masked_psnr(restored: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the PSNR in dB over the mask's pixels (all channels) of each image.

    NaN for an image with an empty mask, inf where the masked pixels are identical.
    """
    _check_pair(restored, original)
    region = _as_mask(mask)
    values = []
    for image, reference, inside in zip(restored, original, region):
        if not inside.any():
            values.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        values.append(
            peak_signal_noise_ratio(
                image[:, inside].double(), reference[:, inside].double(), data_range=1.0
            )
        )
    return torch.stack(values).double()


def masked_ssim(restored: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return the mean of each image's SSIM map over its mask's pixels.

    The map is scikit-image's SSIM with Wang et al.'s settings (Gaussian
    window, sigma 1.5, population covariance), averaged over channels. NaN for
    an image with an empty mask.
    """
    _check_pair(restored, original)
    region = _as_mask(mask).cpu().numpy()
    restored_np = restored.detach().double().cpu().permute(0, 2, 3, 1).numpy()
    original_np = original.detach().double().cpu().permute(0, 2, 3, 1).numpy()
    values = []
    for image, reference, inside in zip(restored_np, original_np, region):
        if not inside.any():
            values.append(float("nan"))
            continue
        _, ssim_map = structural_similarity(
            image, reference, data_range=1.0, channel_axis=2, gaussian_weights=True,
            sigma=1.5, use_sample_covariance=False, full=True,
        )
        values.append(float(ssim_map.mean(axis=2)[inside].mean()))
    return torch.tensor(values, dtype=torch.float64)


def _as_bits(bits: torch.Tensor | np.ndarray) -> torch.Tensor:
    bits = torch.as_tensor(np.asarray(bits) if not isinstance(bits, torch.Tensor) else bits)
    if bits.ndim != 2:
        raise ValueError(f"bits must be (B, N), got {tuple(bits.shape)}")
    return bits.to(torch.int64)


def bit_accuracy(decoded: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return each row's share of decoded bits equal to the expected bits; inputs are (B, N) 0/1."""
    decoded_bits, expected_bits = _as_bits(decoded), _as_bits(expected)
    if decoded_bits.shape != expected_bits.shape:
        raise ValueError(f"bit shapes differ: {tuple(decoded_bits.shape)} and {tuple(expected_bits.shape)}")
    return (decoded_bits == expected_bits).double().mean(dim=1)


def exact_rate(decoded: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> float:
    """Return the share of rows whose bits are all correct (payload success rate)."""
    return float((bit_accuracy(decoded, expected) == 1.0).double().mean())


def _stat_scores(
    pred: torch.Tensor, target: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image (B,) pixel counts: true positives, false positives, false negatives.

    NOTE: counted here because torchmetrics 1.9.0 `binary_stat_scores` with
    `multidim_average="samplewise"` raises IndexError for a batch of one.
    """
    target_mask = _as_mask(target)
    pred_mask = _as_mask(pred, threshold)
    if pred_mask.shape != target_mask.shape:
        raise ValueError(f"mask shapes differ: {tuple(pred_mask.shape)} and {tuple(target_mask.shape)}")
    tp = (pred_mask & target_mask).sum(dim=(1, 2)).double()
    fp = (pred_mask & ~target_mask).sum(dim=(1, 2)).double()
    fn = (~pred_mask & target_mask).sum(dim=(1, 2)).double()
    return tp, fp, fn


def pixel_f1(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Return each image's pixel F1; 1.0 when both masks are empty."""
    tp, fp, fn = _stat_scores(pred, target, threshold)
    denominator = 2 * tp + fp + fn
    return torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), torch.ones_like(tp))


def pixel_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Return each image's pixel IoU (Jaccard index); 1.0 when both masks are empty."""
    tp, fp, fn = _stat_scores(pred, target, threshold)
    union = tp + fp + fn
    return torch.where(union > 0, tp / union.clamp(min=1), torch.ones_like(tp))


def pixel_auc(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Return each image's pixel AUROC of `scores` (probabilities or logits) against the mask.

    NaN for an image whose mask is all one class, where AUROC is undefined.
    """
    target_mask = _as_mask(target)
    if scores.ndim == 4:
        scores = scores[:, 0]
    if scores.shape != target_mask.shape:
        raise ValueError(f"scores shape {tuple(scores.shape)} does not match mask {tuple(target_mask.shape)}")
    values = []
    for score, inside in zip(scores, target_mask):
        if inside.all() or not inside.any():
            values.append(float("nan"))
            continue
        # torchmetrics applies a sigmoid to scores outside [0, 1]; AUROC
        # depends only on their order.
        values.append(float(binary_auroc(score.flatten().double(), inside.flatten().long())))
    return torch.tensor(values, dtype=torch.float64)


def false_positive_rate(pred: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Return each image's share of pixels predicted as tampered, for untouched images."""
    return _as_mask(pred, threshold).double().mean(dim=(1, 2))


def top1_accuracy(
    query_embeddings: torch.Tensor,
    gallery_embeddings: torch.Tensor,
    query_labels: Sequence | torch.Tensor,
    gallery_labels: Sequence | torch.Tensor,
) -> float:
    """Return the share of queries whose nearest gallery entry (cosine) has the query's label.

    Embeddings are (Q, D) and (G, D); labels are any comparable values
    (class ids, image ids, strings). Ties go to the first gallery entry.
    """
    if query_embeddings.ndim != 2 or gallery_embeddings.ndim != 2:
        raise ValueError("embeddings must be (Q, D) and (G, D)")
    if query_embeddings.shape[1] != gallery_embeddings.shape[1]:
        raise ValueError(
            f"embedding sizes differ: {query_embeddings.shape[1]} and {gallery_embeddings.shape[1]}"
        )
    if len(query_labels) != len(query_embeddings) or len(gallery_labels) != len(gallery_embeddings):
        raise ValueError("each embedding needs one label")

    queries = F.normalize(query_embeddings.double(), dim=1)
    gallery = F.normalize(gallery_embeddings.double(), dim=1)
    nearest = (queries @ gallery.T).argmax(dim=1).tolist()
    gallery_list = list(gallery_labels.tolist() if isinstance(gallery_labels, torch.Tensor) else gallery_labels)
    query_list = list(query_labels.tolist() if isinstance(query_labels, torch.Tensor) else query_labels)
    hits = sum(gallery_list[index] == label for index, label in zip(nearest, query_list))
    return hits / len(query_list)
