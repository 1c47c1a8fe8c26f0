"""How much semantics the hidden code carries: category probes over the code alone.

The photos of a split are cut into fixed square tiles and encoded, and only
the hidden code's scales are kept. Two representations of that code are
probed:

- ``code_embedding``: the tokenizer's code embedding, from the head that
  semantic distillation trains (an untrained random projection in a
  tokenizer trained without it);
- ``code_latent``: the latent the code's tokens sum to, average-pooled to
  3 × 3 cells (288 numbers at 32 channels), which every tokenizer has.

Each probe is fitted on the train split: the centre square and 4 more fixed
tiles of each photo. It is scored on the centre tile of each scored photo
against the manifest's semantic category. The probes are a
5-nearest-neighbour vote by cosine similarity and a logistic regression on
standardized features.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

REPRESENTATIONS = ("code_embedding", "code_latent")


@torch.no_grad()
def code_features(model, images: torch.Tensor, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Return {representation: (N, D) float array} computed from the hidden code's tokens only.

    images: (N, 3, R, R) in [0, 1] on the CPU; model: a `MultiScaleVQ`.
    """
    cfg = model.cfg
    device = next(model.parameters()).device
    embeddings, latents = [], []
    for start in range(0, images.shape[0], batch_size):
        tokens = model.encode(images[start : start + batch_size].to(device))[: cfg.hidden_scales]
        embeddings.append(model.code_embedding(tokens).float())
        latent = model.latent_from_tokens(tokens, latent_hw=(cfg.latent_size, cfg.latent_size))
        latents.append(F.adaptive_avg_pool2d(latent.float(), 3).flatten(1).cpu())
    return {"code_embedding": torch.cat(embeddings).numpy(), "code_latent": torch.cat(latents).numpy()}


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 5) -> float:
    """Return the share of test rows whose k nearest train rows (cosine) vote for the right label.

    A tie goes to the label of the nearest row among the tied ones.
    """
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).clip(1e-12)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).clip(1e-12)
    nearest = np.argsort(-(b @ a.T), axis=1)[:, :k]
    correct = 0
    for row, truth in zip(nearest, test_y, strict=True):
        votes: dict[str, int] = {}
        for index in row:
            votes[train_y[index]] = votes.get(train_y[index], 0) + 1
        best = max(votes.values())
        winner = next(train_y[index] for index in row if votes[train_y[index]] == best)
        correct += winner == truth
    return correct / len(test_y)


def linear_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Return the accuracy of a logistic regression fitted on standardized train features."""
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=0.5, max_iter=3000).fit(scaler.transform(train_x), train_y)
    return float((probe.predict(scaler.transform(test_x)) == test_y).mean())


def split_tiles(split: str, tiles_per_photo: int, resolution: int) -> tuple[torch.Tensor, np.ndarray]:
    """Return fixed tiles (N, 3, R, R) of a split's photos, centre tile first, and their categories (N,).

    Raises FileNotFoundError (from `load_photos`) when the data set is not built.
    """
    from hcr_model.data.photos import TileDataset, load_photos

    tiles = TileDataset(load_photos(split), resolution=resolution, augment=False, tiles_per_photo=tiles_per_photo)
    items = [tiles[i] for i in range(len(tiles))]
    return torch.stack([item["image"] for item in items]), np.array([item["category"] for item in items])


def majority_label(labels: np.ndarray) -> str:
    """Return the most common label."""
    values, counts = np.unique(labels, return_counts=True)
    return str(values[np.argmax(counts)])


def probe_tokenizer(
    model,
    train: tuple[torch.Tensor, np.ndarray],
    scored: dict[str, tuple[torch.Tensor, np.ndarray]],
) -> dict[str, float]:
    """Fit both probes on `train` (images, labels) and score them on each named split of `scored`.

    Returns flat keys ``{split}_{representation}_{knn|linear}`` plus
    ``{split}_photos`` and ``{split}_majority`` (the share a constant guess
    of the train split's most common category scores).
    """
    train_images, train_y = train
    train_features = code_features(model, train_images)
    majority = majority_label(train_y)
    row: dict[str, float] = {"train_samples": len(train_y)}
    for split, (images, labels) in scored.items():
        features = code_features(model, images)
        for name in REPRESENTATIONS:
            row[f"{split}_{name}_knn"] = knn_accuracy(train_features[name], train_y, features[name], labels)
            row[f"{split}_{name}_linear"] = linear_accuracy(train_features[name], train_y, features[name], labels)
        row[f"{split}_photos"] = len(labels)
        row[f"{split}_majority"] = float((labels == majority).mean())
    return row
