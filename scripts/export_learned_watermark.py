"""Export a learned-watermark training run at the strength that meets a PSNR target on the validation split.

The trainer anneals the residual towards `--strength`, but the embedder's
own output can grow while it learns, so the PSNR at that strength is only
known after training. This script reads OUT/last.pt, lowers the inference
strength in steps of 2 % until the mean PSNR of the validation squashes
reaches `--target-psnr`, measures the trainer's validation metrics there,
and writes the weight file with them.

Usage: python scripts/export_learned_watermark.py --run ~/.cache/hcr/runs/watermark --out hcr_model/weights/v1/learned_watermark.pt
"""

import argparse
import dataclasses
import platform
import sys
from pathlib import Path

import torch

from hcr_model.training.tokenizer import canonical, load_split
from hcr_model.training.watermark import evaluate
from hcr_model.watermark.learned import LearnedConfig, LearnedWatermark, save_learned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="training run folder with last.pt")
    parser.add_argument("--out", type=Path, required=True, help="weight file to write")
    parser.add_argument("--target-psnr", type=float, default=40.5, help="mean validation PSNR to reach, dB (default: 40.5)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the validation bits and edits (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    state = torch.load(args.run / "last.pt", map_location="cpu", weights_only=False)
    config = LearnedConfig.from_dict(state["config"])
    images = torch.stack([canonical(photo, config.resolution) for photo in load_split("photos", "val")])

    strength = config.strength
    while True:
        model = LearnedWatermark(dataclasses.replace(config, strength=strength))
        model.load_state_dict(state["model"])
        model.eval()
        result = evaluate(model, images, args.seed)
        print(f"strength {strength:.5f}: " + " ".join(f"{k}={v:.4f}" for k, v in result.items()), flush=True)
        if result["psnr"] >= args.target_psnr or strength < 0.2 * config.strength:
            break
        strength *= 0.98

    metadata = {
        "steps": int(state["step"]),
        "train_minutes": round(float(state["spent_seconds"]) / 60, 1),
        "train_command": state.get("args", {}),
        "export_command": " ".join(sys.argv),
        "machine": f"{platform.machine()}, torch {torch.__version__}, 1 thread, cpu",
        **{f"val_{k}": v for k, v in result.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_learned(model, args.out, metrics=metadata)
    print(f"wrote {args.out} at strength {strength:.5f}")


if __name__ == "__main__":
    main()
