"""Measure recovery, retrieval from restored pixels, registry lookup and throughput.

Recovery. Every test-split photo is squashed to the canonical grid, as an
audit does. The benchmark's tampering generator edits it with one kind at a
time (25 % area, random shape), and JPEG 75 optionally follows the edit. The
image is then restored with the ground-truth mask and the original's hidden
code, which is what a valid payload supplies. In-mask PSNR and SSIM against the original are
reported for:
- `transformer`: the recovery Transformer (greedy), masked positions decoded
  to their expected codebook vectors, composited by `composite`;
- `transformer_argmax`: the same, decoding the chosen tokens;
- `transformer_band6`: `transformer` with the edge correction faded out over
  6 pixels instead of filling the whole mask;
- `transformer_no_seam`: `transformer` without the edge correction;
- `oracle`: the original's own tokens decoded (the tokenizer's ceiling);
- `code_only`: decoding the hidden code's scales alone;
- `code_fine`: the hidden code plus the received fine tokens outside the
  mask, with the masked fine positions left out of the latent sum (no
  Transformer);
- `telea`, `ns`: OpenCV inpainting (radius 3) of the received image;
- `received`: the edited image itself (no restoration), for scale.

Retrieval from restored pixels: the code embedding of `encode(restored)` is
searched over a gallery of every test image's code embedding. The script
counts top-1 image and top-1 label, where the label is the photo's category
and, separately, the MobileNetV2 ImageNet class of the original.

Registry lookup: top-1 and latency at 10k, 100k and 1M rows. Rows are built
from real codes: tokenizer codes of augmented crops of the benchmark photos,
plus copies whose code has 1-3 of its tokens replaced at random (embeddings
computed by the tokenizer from the changed tokens). The 1M case adds rows made
by jittering real embeddings with Gaussian noise (random codes), because
encoding a million crops does not fit on a CPU. Queries are the test images
after JPEG 75 and, unless --lookup-without-restoring, the test images after a
25 % edit, JPEG 75 and restoration by the Transformer. Each query is looked
up by its code embedding and by the hidden code read from its own pixels,
and the payload's code (the audit's exact lookup) is timed separately.

Usage:
  python scripts/measure_recovery.py --out docs/measurements/recovery.json
  python scripts/measure_recovery.py --skip-lookup --limit 10   # quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from hcr_model.bench.attacks import jpeg_pillow
from hcr_model.bench.tampering import SHAPES, TAMPER_KINDS, tamper
from hcr_model.imaging import to_canonical
from hcr_model.recovery import composite, decode_expected, load_recovery, restore_image, token_masks
from hcr_model.retrieval import RegistryIndex, pack_code
from hcr_model.tokenizer import load_tokenizer

logger = logging.getLogger("measure_recovery")

AREA = 0.25
METHODS = (
    "transformer", "transformer_argmax", "transformer_band6", "transformer_no_seam", "oracle", "code_fine", "code_only", "telea", "ns", "received",
)


# ---- data ---------------------------------------------------------------------------


def load_test_images(limit: int) -> tuple[torch.Tensor, list[str]]:
    """Canonical squashes of the test photos (N, 3, R, R) and their categories."""
    from PIL import Image

    from hcr_model.data.photos import load_photos
    from hcr_model.imaging import uint8_to_tensor

    records = load_photos("test")
    if limit:
        records = records[:limit]
    images = []
    for record in records:
        with Image.open(record.file) as image:
            images.append(to_canonical(uint8_to_tensor(np.asarray(image.convert("RGB")))))
    return torch.cat(images), [r.category for r in records]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) float -> (H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def from_uint8(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a).permute(2, 0, 1).float() / 255


# ---- metrics ------------------------------------------------------------------------


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """PSNR in dB over the masked pixels of one image (3, H, W), mask (H, W) bool, on the 8-bit grid."""
    pred = (pred.clamp(0, 1) * 255).round() / 255
    target = (target.clamp(0, 1) * 255).round() / 255
    mse = ((pred - target) ** 2)[:, mask].mean().item()
    return 10 * np.log10(1.0 / max(mse, 1e-10))


def masked_ssim(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of the SSIM map (Gaussian window, sigma 1.5, 8-bit data range) over the masked pixels."""
    _, ssim_map = structural_similarity(
        to_uint8(pred), to_uint8(target), channel_axis=2, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255, full=True,
    )
    return float(ssim_map.mean(axis=2)[mask.numpy()].mean())


# ---- methods ------------------------------------------------------------------------


@torch.no_grad()
def decode_without_masked(tokenizer, tokens: list[torch.Tensor], masks: list[torch.Tensor], n_code: int) -> torch.Tensor:
    """Decode with each masked fine-scale token's codebook vector left out of the latent sum."""
    latent_hw = tuple(tokens[-1].shape[-2:])
    f_hat = torch.zeros(tokens[0].shape[0], tokenizer.cfg.code_dim, *latent_hw)
    for k, idx in enumerate(tokens):
        e = tokenizer._lookup(k, idx.long())
        if k >= n_code:
            e = e * (~masks[k])[:, None].float()
        f_hat = f_hat + tokenizer.refine[k](tokenizer._upsample(e, latent_hw))
    return tokenizer.decoder(f_hat).clamp(0, 1)


def opencv_inpaint(received: torch.Tensor, mask: torch.Tensor, method: int) -> torch.Tensor:
    out = []
    for image, m in zip(received, mask[:, 0]):
        filled = cv2.inpaint(to_uint8(image), m.numpy().astype(np.uint8), 3, method)
        out.append(from_uint8(filled))
    return torch.stack(out)


class Originals:
    """Per-image quantities that do not depend on the edit, computed once: tokens and two decodes."""

    @torch.no_grad()
    def __init__(self, tokenizer, images: torch.Tensor, n_code: int, batch_size: int) -> None:
        tokens, oracle, code_only = [], [], []
        for start in range(0, len(images), batch_size):
            batch_tokens = tokenizer.encode(images[start : start + batch_size])
            tokens.append(batch_tokens)
            oracle.append(tokenizer.decode(batch_tokens))
            code_only.append(tokenizer.decode(batch_tokens[:n_code], n_scales=n_code))
        self.tokens = [torch.cat([t[k] for t in tokens]) for k in range(len(tokens[0]))]
        self.oracle = torch.cat(oracle)
        self.code_only = torch.cat(code_only)
        self.n_code = n_code

    def code(self, rows: slice) -> list[torch.Tensor]:
        return [t[rows] for t in self.tokens[: self.n_code]]


@torch.no_grad()
def restore_all(tokenizer, model, originals: Originals, rows: slice, received, mask, band_px: int) -> dict[str, torch.Tensor]:
    """Run every method on one batch of rows; each result is (B, 3, R, R)."""
    n_code = model.config.n_code_scales
    code = originals.code(rows)
    received_tokens = tokenizer.encode(received, prefix=code)
    masks = token_masks(mask, model.config.scales, n_code)

    restored, probabilities = model.restore_distributions(code, received_tokens, mask)
    expected = decode_expected(tokenizer, restored, probabilities, masks)
    argmax = tokenizer.decode(restored)
    code_fine = decode_without_masked(tokenizer, received_tokens, masks, n_code)
    return {
        "transformer": composite(received, expected, mask, band_px),
        "transformer_argmax": composite(received, argmax, mask, band_px),
        "transformer_band6": composite(received, expected, mask, 6),
        "transformer_no_seam": composite(received, expected, mask, 0),
        "oracle": composite(received, originals.oracle[rows], mask, band_px),
        "code_fine": composite(received, code_fine, mask, band_px),
        "code_only": composite(received, originals.code_only[rows], mask, band_px),
        "telea": opencv_inpaint(received, mask, cv2.INPAINT_TELEA),
        "ns": opencv_inpaint(received, mask, cv2.INPAINT_NS),
        "received": received,
    }


def make_edits(images: torch.Tensor, kind: str | list[str], seed: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a tampering kind (one for all, or one per image) at 25 % area to every image.

    Each image's donor, for splices, is the next image.
    """
    rng = np.random.default_rng(seed)
    kinds = [kind] * len(images) if isinstance(kind, str) else kind
    edited, masks = [], []
    arrays = [to_uint8(x) for x in images]
    for i, array in enumerate(arrays):
        result = tamper(
            array, rng, kind=kinds[i], shape=str(rng.choice(SHAPES)), area=AREA, donor=arrays[(i + 1) % len(arrays)]
        )
        edited.append(from_uint8(result.image))
        masks.append(torch.from_numpy(result.mask))
    return torch.stack(edited), torch.stack(masks)[:, None]


# ---- recovery and retrieval ---------------------------------------------------------


def measure_recovery(tokenizer, model, images, categories, batch_size, band_px, seed) -> dict:
    from hcr_model import semantic

    originals = Originals(tokenizer, images, model.config.n_code_scales, batch_size)
    gallery = RegistryIndex(
        [str(i) for i in range(len(images))],
        categories,
        [None] * len(images),
        tokenizer.code_embedding(originals.tokens).numpy(),
    )
    imagenet = semantic.classify(images).argmax(1).tolist()

    results: dict = {}
    for jpeg in (None, 75):
        for kind_index, kind in enumerate(TAMPER_KINDS):
            started = time.monotonic()
            edited, mask = make_edits(images, kind, seed + kind_index)
            received = jpeg_pillow(edited, jpeg) if jpeg else edited
            scores = {m: {"psnr": [], "ssim": []} for m in METHODS}
            retrieval = {m: {"image": 0, "category": 0, "imagenet": 0} for m in ("transformer", "telea", "received")}
            for start in range(0, len(images), batch_size):
                rows = slice(start, start + batch_size)
                outputs = restore_all(tokenizer, model, originals, rows, received[rows], mask[rows], band_px)
                for method, restored in outputs.items():
                    for j, index in enumerate(range(start, start + restored.shape[0])):
                        m = mask[index, 0]
                        scores[method]["psnr"].append(masked_psnr(restored[j], images[index], m))
                        scores[method]["ssim"].append(masked_ssim(restored[j], images[index], m))
                for method in retrieval:
                    restored = outputs[method]
                    embeddings = tokenizer.code_embedding(tokenizer.encode(restored))
                    for j, match in enumerate(gallery.lookup(None, embeddings.numpy())):
                        index = start + j
                        hit = int(match.image_id)
                        retrieval[method]["image"] += hit == index
                        retrieval[method]["category"] += categories[hit] == categories[index]
                        retrieval[method]["imagenet"] += imagenet[hit] == imagenet[index]

            name = f"{kind}{'_jpeg75' if jpeg else ''}"
            results[name] = {
                "recovery": {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()},
                "retrieval_top1": {m: {k: v / len(images) for k, v in r.items()} for m, r in retrieval.items()},
                "mask_area": float(mask.float().mean()),
            }
            t = results[name]["recovery"]
            logger.info(
                "%s: PSNR transformer %.2f, oracle %.2f, code_fine %.2f, code_only %.2f, telea %.2f, ns %.2f; "
                "top-1 image %.3f (%.0f s)",
                name, t["transformer"]["psnr"], t["oracle"]["psnr"], t["code_fine"]["psnr"], t["code_only"]["psnr"], t["telea"]["psnr"],
                t["ns"]["psnr"], results[name]["retrieval_top1"]["transformer"]["image"], time.monotonic() - started,
            )
    return results


def summarize(results: dict) -> dict:
    """Mean over tampering kinds, separately without and with JPEG 75."""
    summary = {}
    for suffix, label in (("", "no_jpeg"), ("_jpeg75", "jpeg75")):
        names = [n for n in results if n.endswith("_jpeg75") == bool(suffix)]
        summary[label] = {
            "recovery": {
                m: {k: float(np.mean([results[n]["recovery"][m][k] for n in names])) for k in ("psnr", "ssim")}
                for m in METHODS
            },
            "retrieval_top1": {
                m: {k: float(np.mean([results[n]["retrieval_top1"][m][k] for n in names])) for k in ("image", "category", "imagenet")}
                for m in results[names[0]]["retrieval_top1"]
            },
        }
    return summary


# ---- throughput ---------------------------------------------------------------------


@torch.no_grad()
def measure_throughput(tokenizer, model, images: torch.Tensor, batch_size: int, repeats: int = 2) -> dict:
    """Restored images per second (encode with prefix, Transformer, decode, composite) on this process's threads."""

    batch = images[:batch_size]
    edited, mask = make_edits(batch, "splice", 0)
    code = tokenizer.encode(batch)[: model.config.n_code_scales]
    restore_image(tokenizer, model, edited, code, mask)  # warm-up
    started = time.monotonic()
    for _ in range(repeats):
        restore_image(tokenizer, model, edited, code, mask)
    seconds = (time.monotonic() - started) / repeats
    return {"batch_size": batch.shape[0], "images_per_s": batch.shape[0] / seconds, "threads": torch.get_num_threads()}


# ---- registry lookup ----------------------------------------------------------------


@torch.no_grad()
def real_codes(tokenizer, n_crops: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Code tokens and embeddings of augmented crops of every benchmark photo (all splits)."""
    from hcr_model.data.photos import TileDataset, load_photos

    dataset = TileDataset(load_photos(None), augment=True, tiles_per_photo=max(1, n_crops // 437 + 1), seed=seed)
    order = np.random.default_rng(seed).permutation(len(dataset))[:n_crops]
    codes, embeddings = [], []
    for start in range(0, len(order), 32):
        batch = torch.stack([dataset[int(i)]["image"] for i in order[start : start + 32]])
        tokens = tokenizer.encode(batch)[: tokenizer.cfg.hidden_scales]
        codes.append(tokens)
        embeddings.append(tokenizer.code_embedding(tokens))
    merged = [torch.cat([c[k] for c in codes]) for k in range(tokenizer.cfg.hidden_scales)]
    return merged, torch.cat(embeddings)


@torch.no_grad()
def jittered_codes(tokenizer, codes: list[torch.Tensor], n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n codes made from real ones by replacing 1-3 random tokens; returns (bits (n, code_bits), embeddings (n, D)).

    Each of three draws replaces a token with probability 0.67, and a draw can
    pick the token already there, so about 4 % of the copies keep their source's
    code (the registry then holds duplicates, and lookups return the first row).
    """
    flat = torch.cat([c.reshape(c.shape[0], -1) for c in codes], dim=1)
    bits, embeddings = [], []
    for start in range(0, n, 4096):
        count = min(4096, n - start)
        rows = flat[torch.from_numpy(rng.integers(0, flat.shape[0], count))].clone()
        for _ in range(3):
            change = torch.from_numpy(rng.random(count) < 0.67)
            position = torch.from_numpy(rng.integers(0, flat.shape[1], count))
            value = torch.from_numpy(rng.integers(0, tokenizer.cfg.codebook_size, count))
            rows[change, position[change]] = value[change]
        tokens, offset = [], 0
        for s in tokenizer.cfg.scales[: tokenizer.cfg.hidden_scales]:
            tokens.append(rows[:, offset : offset + s * s].reshape(-1, s, s))
            offset += s * s
        bits.append(tokenizer.hidden_code(tokens))
        embeddings.append(tokenizer.code_embedding(tokens).numpy())
    return np.concatenate(bits), np.concatenate(embeddings)


@torch.no_grad()
def restored_queries(tokenizer, model, images: torch.Tensor, batch_size: int, seed: int) -> torch.Tensor:
    """Edit each test image over 25 % of its pixels (kinds taken in turn), re-save it as JPEG 75 and restore it.

    The hidden code given to the restoration is the image's own, as an audit
    reads it from the payload. Returns (N, 3, R, R).
    """
    kinds = [TAMPER_KINDS[index % len(TAMPER_KINDS)] for index in range(len(images))]
    edited, mask = make_edits(images, kinds, [seed, 2])
    received = jpeg_pillow(edited, 75)
    n_code = model.config.n_code_scales
    restored = []
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        code = tokenizer.encode(images[rows])[:n_code]
        restored.append(restore_image(tokenizer, model, received[rows], code, mask[rows]))
    return torch.cat(restored)


def measure_lookup(tokenizer, images: torch.Tensor, sizes: list[int], n_crops: int, seed: int, model=None, batch_size: int = 8) -> dict:
    """Measure registry lookup top-1 and latency at each size, queried with JPEG 75 copies and, given `model`, restored images."""
    rng = np.random.default_rng(seed)
    started = time.monotonic()
    codes, embeddings = real_codes(tokenizer, n_crops, seed)
    logger.info("encoded %d real crops for the registry in %.0f s", len(embeddings), time.monotonic() - started)
    real_bits = tokenizer.hidden_code(codes)
    distinct_real = len({row.tobytes() for row in real_bits})
    logger.info("%d distinct hidden codes among %d real crops", distinct_real, len(real_bits))
    jitter_bits, jitter_embeddings = jittered_codes(tokenizer, codes, min(max(sizes), 100_000) - len(embeddings), rng)

    # The test images are rows of every registry. Queries are their JPEG 75
    # versions and, with a recovery model, their restorations after an edit.
    test_tokens = tokenizer.encode(images)
    test_bits = tokenizer.hidden_code(test_tokens)
    test_embeddings = tokenizer.code_embedding(test_tokens).numpy()
    queries = {"jpeg75": tokenizer.encode(jpeg_pillow(images, 75))}
    if model is not None:
        queries["restored"] = tokenizer.encode(restored_queries(tokenizer, model, images, batch_size, seed))
    query_embeddings = {name: tokenizer.code_embedding(tokens).numpy() for name, tokens in queries.items()}
    query_bits = {name: tokenizer.hidden_code(tokens) for name, tokens in queries.items()}

    results: dict = {"real_crops": len(real_bits), "real_distinct_codes": distinct_real}
    for size in sizes:
        n_fill = size - len(images)
        bits = [test_bits, real_bits[:n_fill]]
        vectors = [test_embeddings, embeddings.numpy()[:n_fill]]
        n_fill -= min(n_fill, len(real_bits))
        take = min(n_fill, len(jitter_bits))
        bits.append(jitter_bits[:take])
        vectors.append(jitter_embeddings[:take])
        n_fill -= take
        if n_fill > 0:
            # Synthetic rows for sizes beyond what the tokenizer can embed here in time.
            base = np.concatenate(vectors[1:])
            noisy = base[rng.integers(0, len(base), n_fill)] + rng.normal(0, 0.05, (n_fill, base.shape[1])).astype(np.float32)
            bits.append(rng.integers(0, 2, (n_fill, real_bits.shape[1]), dtype=np.uint8))
            vectors.append(noisy.astype(np.float32))
        all_bits = np.concatenate(bits)
        all_vectors = np.concatenate(vectors)
        ids = [f"row{i}" for i in range(len(all_bits))]

        started = time.monotonic()
        index = RegistryIndex(ids, [None] * len(ids), pack_code(all_bits), all_vectors)
        build_s = time.monotonic() - started

        expected = [f"row{i}" for i in range(len(images))]
        row = {"index": index.kind, "build_s": build_s}
        for name in queries:
            started = time.monotonic()
            by_embedding = index.lookup(None, query_embeddings[name])
            row[f"ms_per_query_embedding_{name}"] = (time.monotonic() - started) * 1000 / len(images)
            row[f"top1_embedding_{name}"] = float(np.mean([m is not None and m.image_id == e for m, e in zip(by_embedding, expected)]))
            # The query's own hidden code, read from its pixels: exact when those tokens survived.
            by_own_code = index.lookup(query_bits[name], query_embeddings[name])
            own_hits = [m is not None and m.image_id == e and m.exact for m, e in zip(by_own_code, expected)]
            row[f"top1_own_code_{name}"] = float(np.mean(own_hits))

        # The payload's code (what an audit reads) with the JPEG query's embedding as the fallback.
        started = time.monotonic()
        by_code = index.lookup(test_bits, query_embeddings["jpeg75"])
        row["ms_per_query_code"] = (time.monotonic() - started) * 1000 / len(images)
        row["top1_exact_code"] = float(np.mean([m.image_id == e and m.exact for m, e in zip(by_code, expected)]))
        row["synthetic_rows"] = int(max(0, size - len(images) - len(real_bits) - len(jitter_bits)))
        results[str(size)] = row
        logger.info("lookup %d rows: %s", size, results[str(size)])
        del index
    return results


# ---- generation ---------------------------------------------------------------------


@torch.no_grad()
def measure_generation(tokenizer, model, n: int, seed: int) -> dict:
    """Payload validity of generated images, and how often re-encoding them gives back the embedded code."""
    from hcr_model.generation import generate_protected
    from hcr_model.keys import SecretKey
    from hcr_model.payload import PayloadCodec
    from hcr_model.watermark.dct import DctCarrier

    key = SecretKey(bytes(range(32)))
    carrier = DctCarrier(key)
    codec = PayloadCodec(key, n_bits=carrier.n_bits, code_bits=tokenizer.cfg.code_bits)
    batch = generate_protected(tokenizer, model, carrier, codec, n=n, seed=seed)
    decoded = codec.decode_batch(carrier.extract(batch.images).soft_bits.numpy())
    reencoded = tokenizer.hidden_code(tokenizer.encode(batch.images))
    return {
        "n": n,
        "payload_valid": float(np.mean([d.payload_valid for d in decoded])),
        "payload_code_matches_tokens": float(np.mean([np.array_equal(d.code_bits, c) for d, c in zip(decoded, batch.code_bits)])),
        "reencoded_code_identical": float(np.mean(np.all(reencoded == batch.code_bits, axis=1))),
        "reencoded_code_bit_agreement": float(np.mean(reencoded == batch.code_bits)),
    }


# ---- entry point --------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="v1", help="tokenizer weights: version name or .pt path")
    parser.add_argument("--recovery", default="v1", help="recovery weights: version name or .pt path")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many test photos (0: all)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per restoration batch")
    parser.add_argument("--band-px", type=int, default=None, help="edge-correction band inside the mask in pixels at R (default: the whole mask)")
    parser.add_argument("--lookup-sizes", default="10000,100000,1000000", help="registry sizes in rows, comma-separated")
    parser.add_argument("--lookup-crops", type=int, default=1500, help="real crops encoded for the registry rows")
    parser.add_argument("--skip-lookup", action="store_true", help="skip the registry lookup measurement")
    parser.add_argument(
        "--lookup-without-restoring", action="store_true", help="query the registry with JPEG 75 copies only, not with restored images"
    )
    parser.add_argument("--skip-recovery", action="store_true", help="skip recovery, throughput and generation (lookup only)")
    parser.add_argument("--generate", type=int, default=16, help="generated images for the in-generation check (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of edits, crops and jitter")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)

    tokenizer = load_tokenizer(args.tokenizer)
    images, categories = load_test_images(args.limit)
    logger.info("measuring on %d test images", len(images))

    report: dict = {
        "machine": f"{platform.machine()} {platform.processor() or ''} {args.threads} thread(s)",
        "command": " ".join(sys.argv),
        "test_images": len(images),
    }
    started = time.monotonic()
    if not args.skip_recovery:
        model = load_recovery(args.recovery)
        report["recovery_weights"] = model_metadata(args.recovery)
        report["throughput"] = measure_throughput(tokenizer, model, images, args.batch_size)
        logger.info("throughput: %s", report["throughput"])
        if args.generate:
            report["generation"] = measure_generation(tokenizer, model, args.generate, args.seed)
            logger.info("generation: %s", report["generation"])
        report["per_kind"] = measure_recovery(tokenizer, model, images, categories, args.batch_size, args.band_px, args.seed)
        report["summary"] = summarize(report["per_kind"])
    if not args.skip_lookup:
        sizes = [int(s) for s in args.lookup_sizes.split(",") if s]
        model = load_recovery(args.recovery) if not args.lookup_without_restoring else None
        report["lookup"] = measure_lookup(tokenizer, images, sizes, args.lookup_crops, args.seed, model, args.batch_size)
    report["minutes"] = (time.monotonic() - started) / 60

    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    print(json.dumps({k: report[k] for k in ("summary", "lookup") if k in report}, indent=2))
    return 0


def model_metadata(path_or_version: str) -> dict:
    from hcr_model.recovery import _resolve_path

    payload = torch.load(_resolve_path(path_or_version), map_location="cpu", weights_only=True)
    return payload.get("metadata", {})


if __name__ == "__main__":
    sys.exit(main())
