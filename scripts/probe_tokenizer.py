"""How much semantics the hidden code carries: category probes over the code alone.

For each tokenizer weight file, the probes of `hcr_model.bench.code_probe`
are fitted on fixed tiles of the train split and scored on the centre tile of
each photo of the scored splits. `hcr bench --sections tokenizer` runs the
same probes on the test split. Usage:

    python scripts/probe_tokenizer.py --weights v1 other.pt --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hcr_model.bench.code_probe import probe_tokenizer, split_tiles
from hcr_model.tokenizer import load_tokenizer, tokenizer_metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", nargs="+", default=["v1"], help="tokenizer weight files or shipped version names (default: v1)")
    parser.add_argument("--score-splits", default="val,test", help="comma-separated splits to score on (default: val,test)")
    parser.add_argument("--train-tiles", type=int, default=5, help="fixed tiles per train photo for fitting (default: 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    splits = [split for split in args.score_splits.split(",") if split]

    results = []
    for weights in args.weights:
        model = load_tokenizer(weights)
        resolution = model.cfg.resolution
        train = split_tiles("train", args.train_tiles, resolution)
        scored = {split: split_tiles(split, 1, resolution) for split in splits}
        metadata = tokenizer_metadata(weights)
        row = {"weights": str(weights), "distill": metadata.get("distill"), **probe_tokenizer(model, train, scored)}
        results.append(row)
        print(json.dumps(row))

    print("| weights | distill | split | majority | embedding k-NN | embedding linear | latent k-NN | latent linear |")
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        for split in splits:
            print(
                f"| {row['weights']} | {row['distill']} | {split} ({row[f'{split}_photos']}) | {row[f'{split}_majority']:.3f} "
                f"| {row[f'{split}_code_embedding_knn']:.3f} | {row[f'{split}_code_embedding_linear']:.3f} "
                f"| {row[f'{split}_code_latent_knn']:.3f} | {row[f'{split}_code_latent_linear']:.3f} |"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
