"""Choose the inpainting blend's tau_px and floor on the val split.

Every val photo is squashed to the canonical grid and edited with each
tampering kind over 25 % of its pixels, once as edited and once followed by
JPEG 75. Each edit is restored by the recovery Transformer without the blend
(`recovery.restore_image(..., blend=False)`) and by OpenCV Telea. Each
(tau_px, floor) pair of the grid blends the two
(`restoration_blend.blend_with_inpainting`'s formula), and the script prints
the mean in-mask PSNR of the best pairs. The chosen pair goes into
`hcr_model/restoration_blend.py`. Usage:

    python scripts/tune_restoration_blend.py [--limit N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from hcr_model.bench.attacks import jpeg_pillow
from hcr_model.bench.tampering import TAMPER_KINDS
from hcr_model.data.photos import load_photos
from hcr_model.imaging import to_canonical, uint8_to_tensor
from hcr_model.recovery import load_recovery, restore_image
from hcr_model.restoration_blend import inpaint_weights
from hcr_model.tokenizer import load_tokenizer

# The sibling script's edit, inpainting and metric helpers.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure_recovery

TAUS_PX = (8, 12, 16, 24, 32, 48)
FLOORS = (0.0, 0.15, 0.3, 0.45)


def load_split_images(split: str, limit: int) -> torch.Tensor:
    """Load the canonical squashes (N, 3, R, R) of a split's photos."""
    records = load_photos(split)[: limit or None]
    images = []
    for record in records:
        with Image.open(record.file) as image:
            images.append(to_canonical(uint8_to_tensor(np.asarray(image.convert("RGB")))))
    return torch.cat(images)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="val", help="photos to tune on (default: val)")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many photos (0: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per restoration batch")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    tokenizer, model = load_tokenizer("v1"), load_recovery("v1")
    images = load_split_images(args.split, args.limit)
    n_code = model.config.n_code_scales
    psnrs: dict[str, list[float]] = {}
    for jpeg in (None, 75):
        for kind_index, kind in enumerate(TAMPER_KINDS):
            edited, mask = measure_recovery.make_edits(images, kind, 100 + kind_index)
            received = jpeg_pillow(edited, jpeg) if jpeg else edited
            for start in range(0, len(images), args.batch_size):
                rows = slice(start, start + args.batch_size)
                code = tokenizer.encode(images[rows])[:n_code]
                transformer = restore_image(tokenizer, model, received[rows], code, mask[rows], blend=False)
                telea = measure_recovery.opencv_inpaint(received[rows], mask[rows], cv2.INPAINT_TELEA)
                candidates = {"transformer": transformer, "telea": telea}
                for tau in TAUS_PX:
                    for floor in FLOORS:
                        weights = torch.from_numpy(np.stack([inpaint_weights(m[0].numpy(), tau, floor) for m in mask[rows]]))[:, None]
                        candidates[f"tau {tau} px, floor {floor}"] = weights * telea + (1 - weights) * transformer
                for name, restored in candidates.items():
                    for j in range(restored.shape[0]):
                        psnrs.setdefault(name, []).append(measure_recovery.masked_psnr(restored[j], images[start + j], mask[start + j, 0]))

    print(f"{args.split} split, {len(images)} photos x {len(TAMPER_KINDS)} kinds x (no JPEG, JPEG 75); in-mask PSNR dB:")
    for name, values in sorted(psnrs.items(), key=lambda item: -float(np.mean(item[1])))[:10]:
        print(f"  {name}: {np.mean(values):.3f}")
    print(f"  transformer alone: {np.mean(psnrs['transformer']):.3f}; telea: {np.mean(psnrs['telea']):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
