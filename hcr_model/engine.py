"""The batched model loop shared by the Ray actors and the benchmark.

`Protector` embeds each image's hidden code as a watermark; `Auditor` reads it
back, localizes edits, checks that the code belongs to the content, restores
edited regions and looks the original up in the registry. Both work on a batch
of decoded images of any sizes: models run on the canonical R × R grid, and
residuals, masks and restored pixels are resized back to each input's size.
"""

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from hcr_model.bundle import ModelBundle
from hcr_model.consistency import consistency_distance
from hcr_model.imaging import add_residual, clipped_share, resize_to, rgb_to_luma, to_canonical
from hcr_model.keys import SecretKey
from hcr_model.payload import PayloadCodec
from hcr_model.recovery import composite as composite_restoration
from hcr_model.recovery import restore_image
from hcr_model.verdict import TAMPERED, VerdictSignals, copied_mark, decide_verdict
from hcr_model.watermark.dct import BLOCK, DctCarrier
from hcr_model.watermark.reading import read_received
from hcr_model.watermark.sync import HIGH_HARMONICS, crop_region, cropped_note, render_canvases, to_protected_frame, to_received_frame

logger = logging.getLogger(__name__)


@dataclass
class ImageInput:
    """One readable image, as the pipeline decoded it."""

    image_id: str
    rgb: np.ndarray  # (H, W, 3) uint8, EXIF orientation applied
    alpha: np.ndarray | None = None  # (H, W) uint8, kept aside by the caller
    notes: list[str] = field(default_factory=list)


@dataclass
class ProtectOutput:
    protected_rgb: np.ndarray  # (H, W, 3) uint8; the caller re-attaches alpha
    hidden_code: bytes  # packed bits, MSB first (tokenizer.hidden_code's order)
    code_bits: int
    code_embedding: np.ndarray  # (D,) float32, L2-normalized
    notes: list[str]


@dataclass
class AuditOutput:
    verdict: str  # authentic | tampered | forged | unmarked
    watermark_score: float
    payload_valid: bool
    bit_confidence: float
    tampered_fraction: float
    mask: np.ndarray | None  # (H, W) bool, tampered images only
    restored_crop: np.ndarray | None  # (h, w, 3) uint8, tampered images only
    restored_bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 in the input
    retrieved_image_id: str | None
    retrieved_label: str | None
    retrieval_distance: float | None
    notes: list[str]
    payload_mac_failed: bool  # ECC decoded but the MAC failed: counts toward the key-mismatch warning
    duration_ms: float


def rgb_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1].

    Arrays from `np.asarray(PIL image)` are read-only, which torch warns about
    when wrapping them, so a read-only array is copied first.
    """
    array = rgb if rgb.flags.writeable else rgb.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def tensor_to_rgb(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounded."""
    return x.clamp(0, 1).mul(255.0).round().to(torch.uint8)[0].permute(1, 2, 0).cpu().numpy()


def canonical_batch(images: list[ImageInput], resolution: int, device: torch.device) -> torch.Tensor:
    """Resize every image to the canonical grid: (B, 3, R, R)."""
    return torch.cat([to_canonical(rgb_to_tensor(image.rgb).to(device), resolution) for image in images])


class Protector:
    """Embed each image's hidden code as a content-bound watermark."""

    def __init__(self, bundle: ModelBundle, key: SecretKey):
        self.bundle = bundle
        self.resolution = bundle.tokenizer.cfg.resolution
        self.carrier = DctCarrier(key, resolution=self.resolution)
        self.codec = PayloadCodec(key, n_bits=self.carrier.n_bits, code_bits=bundle.tokenizer.cfg.code_bits)

    @torch.inference_mode()
    def protect_batch(self, images: list[ImageInput]) -> list[ProtectOutput]:
        if not images:
            return []
        device = self.bundle.device
        tokenizer = self.bundle.tokenizer
        canonical = canonical_batch(images, self.resolution, device)

        # The hidden code is computed from the content itself, which binds the
        # watermark to it.
        tokens = tokenizer.encode(canonical)
        code = tokenizer.hidden_code(tokens)  # (B, code_bits) uint8
        embeddings = tokenizer.code_embedding(tokens).float().cpu().numpy()
        payload_bits = np.stack([self.codec.encode(self.bundle.version_byte, code[i]) for i in range(len(images))])

        marked = self.carrier.embed(canonical, torch.from_numpy(payload_bits).to(device))
        residual = marked - canonical

        outputs = []
        for i, image in enumerate(images):
            height, width = image.rgb.shape[:2]
            original = rgb_to_tensor(image.rgb).to(device)
            # add_residual moves luma lost to clipping into channels with headroom.
            protected = add_residual(original, resize_to(residual[i : i + 1], (height, width)))
            outputs.append(
                ProtectOutput(
                    protected_rgb=tensor_to_rgb(protected),
                    hidden_code=np.packbits(code[i]).tobytes(),
                    code_bits=int(code.shape[1]),
                    code_embedding=embeddings[i].astype(np.float32),
                    notes=list(image.notes) + size_notes(self.carrier, height, width),
                )
            )
        return outputs



def size_notes(carrier, height: int, width: int) -> list[str]:
    """Return a note for images below the carrier's smallest reliable side, else nothing."""
    min_side = getattr(carrier, "min_reliable_side", 0)
    if min(height, width) < min_side:
        return [f"image smaller than {min_side} px on a side: the payload may not survive processing"]
    return []


class Auditor:
    """Read the watermark, localize edits, restore them and find the original."""

    def __init__(self, bundle: ModelBundle, key: SecretKey, registry: pa.Table | None = None, crop_search: bool = True):
        from hcr_model.retrieval import RegistryIndex

        self.bundle = bundle
        self.crop_search = crop_search  # read images that look unmarked again after the crop search
        self.resolution = bundle.tokenizer.cfg.resolution
        self.carrier = DctCarrier(key, resolution=self.resolution)
        self.codec = PayloadCodec(key, n_bits=self.carrier.n_bits, code_bits=bundle.tokenizer.cfg.code_bits)
        self.index = RegistryIndex.from_table(registry) if registry is not None and registry.num_rows else None

    @torch.inference_mode()
    def audit_batch(self, images: list[ImageInput]) -> list[AuditOutput]:
        if not images:
            return []
        start = time.perf_counter()
        bundle = self.bundle
        tokenizer = bundle.tokenizer
        device = bundle.device
        count = len(images)
        canonical = canonical_batch(images, self.resolution, device)

        # 1. Watermark and payload; a cropped image is read after the crop search.
        reading = read_received(self.carrier, canonical, [image.rgb for image in images], crop_search=self.crop_search)
        extraction = reading.extraction
        soft = extraction.soft_bits.float().cpu().numpy()
        decoded = [self.codec.decode(soft[i]) for i in range(count)]
        valid = np.array([d.payload_valid for d in decoded])

        # 2. Tamper evidence: blocks that disagree with the bits the payload
        # predicts. Without a decodable payload the hard decisions stand in.
        expected = np.stack(
            [self.codec.reencode(d) if d.ecc_ok else (soft[i] > 0).astype(np.uint8) for i, d in enumerate(decoded)]
        )
        evidence = self.carrier.evidence(extraction, torch.from_numpy(expected).to(device))
        evidence = self._received_frame(evidence, reading.alignments, images)
        probability = torch.sigmoid(bundle.localizer(canonical, evidence).float())  # (B, 1, R, R)
        mask = probability > bundle.localizer_threshold

        # 3. Content binding: the code's coarse picture vs the received one's.
        received_tokens = tokenizer.encode(canonical)
        hidden_scales = tokenizer.cfg.hidden_scales
        code_tokens = self._code_tokens(decoded, received_tokens, hidden_scales)
        code_picture = tokenizer.decode(code_tokens, n_scales=hidden_scales)
        received_picture = tokenizer.decode(received_tokens, n_scales=hidden_scales)
        distance = consistency_distance(code_picture, received_picture, mask).cpu().numpy()
        for i in reading.synchronised:
            # A cropped image is compared in two framings. On its own grid, the
            # code's picture is moved onto it; on the protected grid, the
            # received pixels go back where the crop took them. Its content
            # must disagree in both to count against it.
            moved = to_received_frame(code_picture[i : i + 1], reading.alignments[i], images[i].rgb.shape[:2], self.resolution)
            own_grid = float(consistency_distance(moved, received_picture[i : i + 1], mask[i : i + 1])[0])
            protected_grid = self._cropped_distance(images[i], reading.alignments[i], code_picture[i : i + 1], mask[i : i + 1])
            logger.debug("cropped image %d: consistency distance %.3f on its grid, %.3f on the protected grid", i, own_grid, protected_grid)
            distance[i] = min(own_grid, protected_grid)

        # 4. Verdicts, with each mask measured at the input's own size. An
        # unreadable payload is checked for a copied watermark first.
        copied = self._copied_marks(images, canonical, extraction, valid, reading.alignments)
        full_masks, fractions, verdicts = [], [], []
        for i, image in enumerate(images):
            height, width = image.rgb.shape[:2]
            full_mask = resize_to(probability[i : i + 1], (height, width))[0, 0] > bundle.localizer_threshold
            fraction = float(full_mask.float().mean())
            signals = VerdictSignals(
                watermark_score=float(extraction.watermark_score[i]),
                watermark_threshold=bundle.calibration.watermark_threshold,
                ecc_ok=bool(decoded[i].ecc_ok),
                mac_ok=bool(decoded[i].mac_ok),
                consistent=bool(distance[i] <= bundle.calibration.consistency_tolerance),
                tampered_fraction=fraction,
                min_fraction=bundle.min_fraction,
                copied_mark=i in copied,
            )
            full_masks.append(full_mask)
            fractions.append(fraction)
            verdicts.append(decide_verdict(signals))

        # 5. Restoration of the edited regions, batched over tampered images.
        # The decision threshold is strict, so untouched images stay clean. Once
        # an image is judged edited, its mask is drawn at the lower best-F1
        # threshold, which follows the edit's outline more closely.
        tampered = [i for i, verdict in enumerate(verdicts) if verdict == TAMPERED]
        drawn = probability > bundle.mask_threshold
        for i in tampered:
            height, width = images[i].rgb.shape[:2]
            full_masks[i] = resize_to(probability[i : i + 1], (height, width))[0, 0] > bundle.mask_threshold
        restore_tokens = code_tokens
        cropped_tampered = [i for i in tampered if reading.alignments[i] is not None]
        if cropped_tampered:
            # The payload's tokens describe the whole protected image, and the
            # restoration needs them over the crop only. They are re-encoded
            # from the code's coarse picture seen through the crop.
            restore_tokens = [scale.clone() for scale in code_tokens]
            for i in cropped_tampered:
                moved = to_received_frame(code_picture[i : i + 1], reading.alignments[i], images[i].rgb.shape[:2], self.resolution)
                for scale, cropped in zip(restore_tokens, tokenizer.encode(moved)[:hidden_scales]):
                    scale[i] = cropped[0]
        restored = self._restore(canonical, restore_tokens, drawn, tampered) if tampered else {}

        # 6. Retrieval: the payload's code when it is valid, else the code of
        # the restored (or received) pixels through the nearest-neighbour index.
        matches = self._retrieve(decoded, code_tokens, restored, canonical, valid)

        elapsed_ms = (time.perf_counter() - start) * 1000.0 / count
        outputs = []
        for i, image in enumerate(images):
            notes = list(image.notes)
            verdict = verdicts[i]
            mask_out = crop = bbox = None
            alignment = reading.alignments[i]
            if alignment is not None:
                notes.append(cropped_note(alignment, *image.rgb.shape[:2], self.resolution))
            if i in copied:
                notes.append(
                    f"copied watermark: the keyed sync template is in place (z {copied[i][0]:.1f} on its high harmonics) but the carrier bits "
                    f"do not agree (z {copied[i][1]:.1f}); another image's watermark was added to this content"
                )
            if not valid[i]:
                # Below the reliable size an unreadable payload is expected
                # after processing, even on a protected image.
                notes.extend(size_notes(self.carrier, *image.rgb.shape[:2]))
            if verdict == TAMPERED:
                mask_out = full_masks[i].cpu().numpy()
                crop, bbox = self._restored_crop(image, restored[i], full_masks[i])
                if not valid[i]:
                    notes.append("payload unreadable: restored from the received coarse tokens, not the hidden code")
            match = matches[i]
            outputs.append(
                AuditOutput(
                    verdict=verdict,
                    watermark_score=float(extraction.watermark_score[i]),
                    payload_valid=bool(valid[i]),
                    bit_confidence=float(extraction.bit_confidence[i]),
                    tampered_fraction=fractions[i],
                    mask=mask_out,
                    restored_crop=crop,
                    restored_bbox=bbox,
                    retrieved_image_id=match.image_id if match else None,
                    retrieved_label=match.label if match else None,
                    retrieval_distance=float(match.distance) if match else None,
                    notes=notes,
                    payload_mac_failed=bool(decoded[i].ecc_ok and not decoded[i].mac_ok),
                    duration_ms=elapsed_ms,
                )
            )
        return outputs

    def _copied_marks(self, images: list[ImageInput], canonical: torch.Tensor, extraction, valid: np.ndarray, alignments) -> dict[int, tuple[float, float]]:
        """Return {row: (template z, carrier z)} for the images whose unreadable payload comes with a copied watermark."""
        rows = [i for i in range(len(valid)) if not valid[i] and alignments[i] is None]
        sides = [min(images[i].rgb.shape[:2]) for i in rows]
        if self.carrier.sync is None or not rows:
            return {}
        candidates = canonical[rows].float()
        template = self.carrier.sync.presence_zscore(rgb_to_luma(candidates) * 255.0, HIGH_HARMONICS).tolist()
        carrier = extraction.slots["zscore"][rows].tolist()
        clipped = clipped_share(candidates).tolist()
        minimum = self.carrier.min_reliable_side
        return {i: (t, c) for i, t, c, k, side in zip(rows, template, carrier, clipped, sides) if copied_mark(t, c, k, side, minimum)}

    def _cropped_distance(self, image: ImageInput, alignment, code_picture: torch.Tensor, mask: torch.Tensor) -> float:
        """Measure a cropped image's consistency distance on the protected image's grid, where the code was computed.

        The received pixels go back where the crop took them from, and the
        code's own coarse picture fills the rest of the grid. The coarse
        decode of that composite is then compared with the code's picture
        over the received part only, outside the localized edit.
        """
        tokenizer = self.bundle.tokenizer
        hidden_scales = tokenizer.cfg.hidden_scales
        size = image.rgb.shape[:2]
        received = rgb_to_tensor(image.rgb).to(code_picture.device)
        canvas, _ = render_canvases(received, [alignment], self.resolution, BLOCK)
        inside = crop_region(alignment, size, self.resolution, code_picture.device)  # (1, 1, R, R) bool
        composite = torch.where(inside, canvas.clamp(0, 1), code_picture.float())
        picture = tokenizer.decode(tokenizer.encode(composite)[:hidden_scales], n_scales=hidden_scales)
        edit = to_protected_frame(mask.float(), alignment, size, self.resolution) > 0.5
        return float(consistency_distance(code_picture, picture, edit | ~inside)[0])

    def _received_frame(self, values: torch.Tensor, alignments, images: list[ImageInput]) -> torch.Tensor:
        """Move the rows read after crop synchronisation from the protected image's grid onto the received one's."""
        if not any(alignment is not None for alignment in alignments):
            return values
        out = values.clone()
        for i, alignment in enumerate(alignments):
            if alignment is not None:
                out[i] = to_received_frame(values[i : i + 1], alignment, images[i].rgb.shape[:2], self.resolution)[0]
        return out

    def _code_tokens(self, decoded, received_tokens, hidden_scales: int) -> list[torch.Tensor]:
        """The trusted coarse tokens: the payload's where valid, else the received image's own."""
        tokenizer = self.bundle.tokenizer
        code_tokens = [scale.clone() for scale in received_tokens[:hidden_scales]]
        for i, payload in enumerate(decoded):
            if payload.payload_valid:
                from_code = tokenizer.tokens_from_code(np.asarray(payload.code_bits)[None, :])
                for scale, tokens in zip(code_tokens, from_code):
                    scale[i] = tokens[0].to(scale.device)
        return code_tokens

    def _restore(self, canonical, code_tokens, mask, indices: list[int]) -> dict[int, torch.Tensor]:
        """Restore the tampered images on the canonical grid; (1, 3, R, R) each.

        `recovery.restore_image` is the path the benchmark measures.
        """
        select = torch.tensor(indices, device=canonical.device)
        prefix = [scale[select] for scale in code_tokens]
        pictures = restore_image(
            self.bundle.tokenizer, self.bundle.recovery, canonical[select], prefix, mask[select], refiner=self.bundle.refiner
        )
        return {index: pictures[j : j + 1] for j, index in enumerate(indices)}

    def _restored_crop(self, image: ImageInput, picture, full_mask):
        """Composite at the input's size and crop to the mask's bounding box."""
        height, width = image.rgb.shape[:2]
        received = rgb_to_tensor(image.rgb).to(picture.device)
        decoded = resize_to(picture, (height, width))
        # Every pixel outside the mask stays as received; inside, the decoded
        # pixels are shifted by the colour difference measured at the edge.
        composite = composite_restoration(received, decoded, full_mask[None, None])

        ys, xs = torch.nonzero(full_mask, as_tuple=True)
        x0, y0 = int(xs.min()), int(ys.min())
        x1, y1 = int(xs.max()) + 1, int(ys.max()) + 1
        crop = tensor_to_rgb(composite[:, :, y0:y1, x0:x1])
        return crop, (x0, y0, x1, y1)

    def _retrieve(self, decoded, code_tokens, restored, canonical, valid):
        if self.index is None:
            return [None] * len(decoded)
        tokenizer = self.bundle.tokenizer
        hidden_scales = tokenizer.cfg.hidden_scales
        embeddings = tokenizer.code_embedding(code_tokens).float()
        code_bits = tokenizer.hidden_code(code_tokens)
        for i, picture in restored.items():
            if not valid[i]:
                own = tokenizer.encode(picture)[:hidden_scales]
                embeddings[i] = tokenizer.code_embedding(own).float()[0]
        # An invalid payload's code is the image's own: only the embedding search is meaningful.
        matches = self.index.lookup(code_bits, embeddings.cpu().numpy(), code_valid=valid)
        return [match if (valid[i] or i in restored) else None for i, match in enumerate(matches)]
