"""Experiment: distil only the code head of a frozen tokenizer, then probe the code embedding.

The tokens, and so every hidden code, stay as they are. Only the head that
maps the hidden code to its embedding (`MultiScaleVQ.code_head`) trains, with
a fresh predictor, to predict MobileNetV2's pooled features centred by their
running mean (`training.tokenizer.centred_teacher_target`). Batches are 16
augmented train tiles (`TileDataset`). At the end the category probes of
`hcr_model.bench.code_probe` run on the val and test splits and print one
line of scores. With `--out` the tokenizer with the new head is written too.

NOTE: a new head changes every code embedding, and registries store
embeddings, so such a head cannot replace a shipped version's head: registries
written before would no longer match.

Usage:

    python scripts/distill_code_head.py --minutes 12 [--weights v1] [--out head.pt]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hcr_model.bench.code_probe import probe_tokenizer, split_tiles
from hcr_model.data.photos import TileDataset, load_photos
from hcr_model.semantic import load_mobilenet_v2
from hcr_model.tokenizer import load_tokenizer, save_tokenizer
from hcr_model.training.tokenizer import centred_teacher_target

BATCH = 16
TEACHER_SIZE = 160
TEACHER_DIM = 1280


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="v1", help="tokenizer weights: a shipped version name or a .pt path (default: v1)")
    parser.add_argument("--minutes", type=float, default=12.0, help="training wall time in minutes (default: 12)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and the tile order (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the tokenizer with the trained head here (default: not written)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer = load_tokenizer(args.weights)
    cfg = tokenizer.cfg
    teacher = load_mobilenet_v2().eval()
    head = tokenizer.code_head.requires_grad_(True).train()
    predictor = torch.nn.Sequential(torch.nn.Linear(cfg.embedding_dim, 512), torch.nn.SiLU(), torch.nn.Linear(512, TEACHER_DIM))
    optimizer = torch.optim.AdamW([*head.parameters(), *predictor.parameters()], lr=args.lr, weight_decay=1e-2)
    tiles = TileDataset(load_photos("train"), augment=True, tiles_per_photo=8)

    running_mean, step, epoch, order = None, 0, 0, []
    start = time.monotonic()
    while time.monotonic() - start < args.minutes * 60:
        if not order:
            tiles.set_epoch(epoch)
            order = list(np.random.default_rng([args.seed, epoch]).permutation(len(tiles)))
            epoch += 1
        batch = torch.stack([tiles[int(order.pop())]["image"] for _ in range(min(BATCH, len(order)))])
        with torch.no_grad():
            tokens = tokenizer.encode(batch)[: cfg.hidden_scales]
            latent = tokenizer.latent_from_tokens(tokens, latent_hw=(cfg.latent_size, cfg.latent_size))
            target, running_mean = centred_teacher_target(teacher.embed(batch, size=TEACHER_SIZE).float(), running_mean)
        loss = 1.0 - F.cosine_similarity(predictor(head(latent)), target, dim=1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            print(f"step {step}: loss {loss.item():.3f}, {time.monotonic() - start:.0f} s", flush=True)

    head.eval().requires_grad_(False)
    train = split_tiles("train", 5, cfg.resolution)
    scored = {split: split_tiles(split, 1, cfg.resolution) for split in ("val", "test")}
    print(json.dumps({"steps": step, "epochs": epoch, **probe_tokenizer(tokenizer, train, scored)}))
    if args.out is not None:
        save_tokenizer(tokenizer, args.out, metadata={"code_head_distilled_from": str(args.weights), "steps": step})
    return 0


if __name__ == "__main__":
    sys.exit(main())
