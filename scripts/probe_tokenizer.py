"""How much semantics the hidden code carries: category probes over the code alone.

For each tokenizer weight file, the benchmark photos are encoded and only the
hidden code's scales are kept. Two representations of that code are probed:

- ``code_embedding``: the tokenizer's code embedding (the head that semantic
  distillation trains; untrained noise in a tokenizer trained without it);
- ``code_latent``: the latent the code's tokens sum to, average-pooled to
  3 × 3 cells (288 numbers), which every tokenizer has.

Each probe is fitted on the train split (fixed tiles: the centre square and
the corners). It is scored on the centre tile of each photo of the scored
splits, against the manifest's semantic category. The probes are a
5-nearest-neighbour vote by cosine similarity and a logistic regression on
standardized features. Usage:

    python scripts/probe_tokenizer.py --weights v1 other.pt --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from hcr_model.tokenizer import MultiScaleVQ, load_tokenizer


@torch.no_grad()
def code_features(model: MultiScaleVQ, images: torch.Tensor, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Return {representation: (N, D) float array} computed from the hidden code's tokens only."""
    cfg = model.cfg
    embeddings, latents = [], []
    for start in range(0, images.shape[0], batch_size):
        tokens = model.encode(images[start : start + batch_size])[: cfg.hidden_scales]
        embeddings.append(model.code_embedding(tokens).float())
        latent = model.latent_from_tokens(tokens, latent_hw=(cfg.latent_size, cfg.latent_size))
        latents.append(F.adaptive_avg_pool2d(latent.float(), 3).flatten(1).cpu())
    return {"code_embedding": torch.cat(embeddings).numpy(), "code_latent": torch.cat(latents).numpy()}


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 5) -> float:
    """Share of test rows whose k nearest train rows (cosine) vote for the right label; ties go to the nearest."""
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
    scaler = StandardScaler().fit(train_x)
    probe = LogisticRegression(C=0.5, max_iter=3000).fit(scaler.transform(train_x), train_y)
    return float((probe.predict(scaler.transform(test_x)) == test_y).mean())


def split_images(split: str, tiles_per_photo: int, resolution: int) -> tuple[torch.Tensor, np.ndarray]:
    """Fixed tiles of a split's photos (centre first) and their categories."""
    from hcr_model.data.photos import TileDataset, load_photos

    tiles = TileDataset(load_photos(split), resolution=resolution, augment=False, tiles_per_photo=tiles_per_photo)
    items = [tiles[i] for i in range(len(tiles))]
    return torch.stack([item["image"] for item in items]), np.array([item["category"] for item in items])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=["v1"], help="tokenizer weight files or shipped version names (default: v1)")
    parser.add_argument("--score-splits", default="val,test", help="comma-separated splits to score on (default: val,test)")
    parser.add_argument("--train-tiles", type=int, default=5, help="fixed tiles per train photo for fitting (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    results = []
    for weights in args.weights:
        model = load_tokenizer(weights)
        resolution = model.cfg.resolution
        train_images, train_y = split_images("train", args.train_tiles, resolution)
        train_features = code_features(model, train_images)
        row = {"weights": str(weights), "distill": bool(model_metadata(weights).get("distill", True)), "train_samples": len(train_y)}
        for split in args.score_splits.split(","):
            images, labels = split_images(split, 1, resolution)
            features = code_features(model, images)
            for name, train_x in train_features.items():
                row[f"{split}_{name}_knn"] = knn_accuracy(train_x, train_y, features[name], labels)
                row[f"{split}_{name}_linear"] = linear_accuracy(train_x, train_y, features[name], labels)
            row[f"{split}_photos"] = len(labels)
            row[f"{split}_majority"] = float((labels == _majority(train_y)).mean())
        results.append(row)
        print(json.dumps(row))

    print("| weights | distill | split | majority | embedding k-NN | embedding linear | latent k-NN | latent linear |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        for split in args.score_splits.split(","):
            print(
                f"| {row['weights']} | {row['distill']} | {split} ({row[f'{split}_photos']}) | {row[f'{split}_majority']:.3f} "
                f"| {row[f'{split}_code_embedding_knn']:.3f} | {row[f'{split}_code_embedding_linear']:.3f} "
                f"| {row[f'{split}_code_latent_knn']:.3f} | {row[f'{split}_code_latent_linear']:.3f} |"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _majority(labels: np.ndarray) -> str:
    values, counts = np.unique(labels, return_counts=True)
    return str(values[np.argmax(counts)])


def model_metadata(weights: str) -> dict:
    """Return the metadata stored in a tokenizer weight file (training options such as ``distill``)."""
    from hcr_model.tokenizer import _resolve

    return dict(torch.load(_resolve(weights), map_location="cpu", weights_only=True).get("metadata", {}))


if __name__ == "__main__":
    sys.exit(main())
