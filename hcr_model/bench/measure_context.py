"""Shared state of the benchmark sections: images, key, models, protected copies.

Models load one by one, so a missing weight file removes only the sections
that need it; `LoadedModels.missing` records why each one is absent. Work
that several sections reuse (protected images, the registry, the tampered
set and its audits) is computed once, on first use.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from hcr_model.bench.attacks import ATTACKS
from hcr_model.bench.suites import BenchImage, SuiteConfig, kinds_for_image
from hcr_model.bench.tampering import tamper
from hcr_model.bundle import (
    VERSION_BYTES,
    BundleNotFoundError,
    ModelBundle,
    assemble_bundle,
    load_calibration,
    select_device,
    weights_dir,
)
from hcr_model.engine import (
    Auditor,
    AuditOutput,
    ImageInput,
    rgb_to_tensor,
    tensor_to_rgb,
)
from hcr_model.imaging import (
    CANONICAL_RESOLUTION,
    add_residual,
    resize_to,
    to_canonical,
)
from hcr_model.keys import SecretKey
from hcr_model.payload import DEFAULT_CODE_BITS, PayloadCodec
from hcr_model.watermark.base import WatermarkBackend
from hcr_model.watermark.dct import DctCarrier

logger = logging.getLogger(__name__)

# A fixed, public key: the benchmark measures the method, and a fixed key
# makes every run draw the same carrier tables.
BENCH_KEY = SecretKey(hashlib.sha256(b"hcr-bench-key").digest())
BATCH = 8  # images per model batch
ALL_KINDS = "all"  # the group of every tampering kind in per-kind tables


class SectionSkipped(Exception):
    """A section cannot run (weights or a package missing); the message is the reason."""


def run_part(run, part: str, notes: list[str], errors: list[str]):
    """Run an optional part of a section and return its result, or None when it cannot run.

    A missing model adds a note. A failure adds an error (the run then exits
    with status 1) but keeps the section's other numbers.
    """
    try:
        return run()
    except SectionSkipped as exc:
        notes.append(f"{part} left out: {exc}")
    except Exception as exc:  # reported in the section, with the traceback in the log
        logger.exception("%s failed", part)
        errors.append(f"{part} failed: {type(exc).__name__}: {exc}")
    return None


@dataclass
class LoadedModels:
    """The models of one weights folder that could be loaded, and why the others could not."""

    folder: str | None
    tokenizer: torch.nn.Module | None = None
    localizer: object | None = None  # hcr_model.localizer.LocalizerWeights
    recovery: torch.nn.Module | None = None
    refiner: torch.nn.Module | None = None  # None when the folder has no refiner.pt
    learned_watermark: torch.nn.Module | None = None  # None when the folder has no learned_watermark.pt
    bundle: ModelBundle | None = None
    missing: dict[str, str] = field(default_factory=dict)

    def need(self, *names: str) -> None:
        """Raise SectionSkipped naming every requested model that is missing."""
        absent = [f"{name}: {self.missing[name]}" for name in names if name in self.missing]
        if absent:
            raise SectionSkipped("; ".join(absent))


def load_models(version: str, folder: Path | None, device: torch.device) -> LoadedModels:
    """Load what exists of a weights version (or of `folder`, a development checkpoint folder)."""
    from hcr_model.localizer import load_localizer
    from hcr_model.recovery import load_recovery
    from hcr_model.restoration_refiner import load_optional_refiner
    from hcr_model.tokenizer import load_tokenizer
    from hcr_model.watermark.learned import load_optional_learned

    if folder is None:
        try:
            folder = weights_dir(version)
        except BundleNotFoundError as exc:
            reason = str(exc)
            return LoadedModels(None, missing={name: reason for name in ("tokenizer", "localizer", "recovery", "bundle")})
    models = LoadedModels(str(folder))

    loaders = {
        "tokenizer": lambda: load_tokenizer(folder / "tokenizer.pt").to(device).eval(),
        "localizer": lambda: load_localizer(folder / "localizer.pt", device=device),
        "recovery": lambda: load_recovery(folder / "recovery.pt").to(device).eval(),
    }
    for name, load in loaders.items():
        try:
            setattr(models, name, load())
        except (FileNotFoundError, ValueError, RuntimeError, KeyError) as exc:
            models.missing[name] = f"{type(exc).__name__}: {exc}"
            logger.warning("%s not loaded: %s", name, exc)
    models.refiner = load_optional_refiner(folder, device)
    models.learned_watermark = load_optional_learned(folder, device)

    absent = [name for name in loaders if name in models.missing]
    if absent:
        models.missing["bundle"] = f"the audit engine needs every model; missing {', '.join(absent)}"
        return models
    if version not in VERSION_BYTES:
        models.missing["bundle"] = f"weights version {version!r} has no payload version byte; known: {sorted(VERSION_BYTES)}"
        return models
    try:
        calibration = load_calibration(folder)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        models.missing["bundle"] = f"{type(exc).__name__}: {exc}"
        return models

    models.bundle = assemble_bundle(version, models.tokenizer, models.localizer, models.recovery, calibration, device, models.refiner)
    return models


@dataclass
class ProtectedImage:
    """One image after protection, with what was embedded."""

    rgb: np.ndarray  # (H, W, 3) uint8
    code_bits: np.ndarray  # (code_bits,) uint8, the hidden code in the payload
    carrier_bits: np.ndarray  # (n_bits,) uint8, what the carrier embedded
    embedding: np.ndarray | None  # (D,) float32 code embedding; None without a tokenizer


@dataclass
class TamperCase:
    """One edited protected image and its ground truth, at the input's size."""

    image_index: int
    kind: str
    post_edit: str  # attack applied after the edit
    rgb: np.ndarray  # (H, W, 3) uint8, as received
    mask: np.ndarray  # (H, W) bool, True = edited
    area: float  # share of edited pixels


def embed_full_resolution(carrier: WatermarkBackend, rgb: np.ndarray, bits: np.ndarray, device: torch.device) -> np.ndarray:
    """Embed on the canonical grid and add the residual resized back, as `Protector` does.

    rgb: (H, W, 3) uint8; bits: (n_bits,) uint8. Returns (H, W, 3) uint8.
    """
    with torch.inference_mode():
        original = rgb_to_tensor(rgb).to(device)
        canonical = to_canonical(original, carrier.resolution)
        marked = carrier.embed(canonical, torch.as_tensor(bits[None], device=device))
        residual = resize_to(marked - canonical, original.shape[-2:])
        return tensor_to_rgb(add_residual(original, residual))


def canonical_stack(images: list[np.ndarray], resolution: int, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 images of any sizes -> (B, 3, R, R) float on `device`."""
    if not images:
        return torch.zeros(0, 3, resolution, resolution, device=device)
    return torch.cat([to_canonical(rgb_to_tensor(rgb).to(device), resolution) for rgb in images])


def canonical_mask(mask: np.ndarray, resolution: int) -> torch.Tensor:
    """(H, W) bool -> (1, 1, R, R) bool: the pixels more than half covered after resizing."""
    as_float = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = torch.nn.functional.interpolate(as_float, size=(resolution, resolution), mode="area")
    return resized > 0.5


def apply_attack(name: str, rgb: np.ndarray) -> np.ndarray:
    """Run an attack's evaluation form on one (H, W, 3) uint8 image; the size may change."""
    if name == "identity":
        return rgb
    return tensor_to_rgb(ATTACKS[name].apply(rgb_to_tensor(rgb)))


class BenchContext:
    """Shared state of one benchmark run."""

    def __init__(self, config: SuiteConfig, images: list[BenchImage], gallery: list[BenchImage], models: LoadedModels, device: torch.device | None = None):
        self.config = config
        self.images = images
        self.gallery = gallery  # every image of the source, for retrieval
        self.models = models
        self.device = device or select_device()
        self.key = BENCH_KEY
        tokenizer = models.tokenizer
        self.resolution = tokenizer.cfg.resolution if tokenizer is not None else CANONICAL_RESOLUTION
        self.code_bits = tokenizer.cfg.code_bits if tokenizer is not None else DEFAULT_CODE_BITS
        self.carrier = DctCarrier(self.key, resolution=self.resolution)
        self.codec = PayloadCodec(self.key, n_bits=self.carrier.n_bits, code_bits=self.code_bits)
        self.version_byte = models.bundle.version_byte if models.bundle is not None else 1
        self.cache: dict[str, object] = {}  # results one section computes and a later one reuses

    # ---- protection -------------------------------------------------------

    @cached_property
    def protection_path(self) -> str:
        if self.models.tokenizer is not None:
            return "canonical embed, residual resized back (the Protector's steps); payload = the image's hidden code"
        return "canonical embed, residual resized back (the Protector's steps); payload = random 140-bit code (tokenizer missing)"

    @cached_property
    def protected(self) -> list[ProtectedImage]:
        """Protect every image once; sections reuse the result.

        The steps are `Protector.protect_batch`'s, run with the carrier and
        codec directly so that they work without the full bundle. The speed
        section checks the engine's output against them.
        """
        out = []
        rng = np.random.default_rng([self.config.seed, 1])
        for start in range(0, len(self.images), BATCH):
            chunk = self.images[start : start + BATCH]
            codes, embeddings = self._codes([image.rgb for image in chunk], rng)
            for i, image in enumerate(chunk):
                bits = self.codec.encode(self.version_byte, codes[i])
                out.append(ProtectedImage(embed_full_resolution(self.carrier, image.rgb, bits, self.device), codes[i], bits, embeddings[i]))
        return out

    def _codes(self, rgbs: list[np.ndarray], rng: np.random.Generator) -> tuple[np.ndarray, list]:
        tokenizer = self.models.tokenizer
        if tokenizer is None:
            return rng.integers(0, 2, size=(len(rgbs), self.code_bits), dtype=np.uint8), [None] * len(rgbs)
        with torch.inference_mode():
            tokens = tokenizer.encode(canonical_stack(rgbs, self.resolution, self.device))
            embeddings = tokenizer.code_embedding(tokens).float().cpu().numpy()
        return tokenizer.hidden_code(tokens), list(embeddings)

    @cached_property
    def registry(self) -> pa.Table:
        """Registry rows of the protected images, as the protect flow writes them (the columns an audit reads)."""
        rows = self.protected
        return pa.table(
            {
                "image_id": [image.image_id for image in self.images],
                "hidden_code": [np.packbits(row.code_bits).tobytes() for row in rows],
                "code_embedding": [row.embedding.astype(np.float32).tolist() for row in rows],
                "label": [image.label for image in self.images],
            }
        )

    @cached_property
    def auditor(self) -> Auditor:
        self.models.need("bundle")
        return Auditor(self.models.bundle, self.key, self.registry)

    def audit(self, rgbs: list[np.ndarray], ids: list[str]) -> list[AuditOutput]:
        """Audit images through the engine, in batches."""
        out = []
        for start in range(0, len(rgbs), BATCH):
            batch = [ImageInput(ids[i], rgbs[i]) for i in range(start, min(len(rgbs), start + BATCH))]
            out.extend(self.auditor.audit_batch(batch))
            if (start // BATCH) % 10 == 9:
                logger.info("audited %d / %d images", len(out), len(rgbs))
        return out

    # ---- tampering -----------------------------------------------------------

    def tamper_cases(self, area: float | None, tag: int) -> list[TamperCase]:
        """Edit every protected image (once per kind, or per the suite's share), then apply each post-edit attack.

        `area` None draws it from the suite's range. `tag` separates the
        random streams of different case sets.
        """
        cases = []
        count = len(self.images)
        for index, protected in enumerate(self.protected):
            donor = self.images[(index + 1) % count].rgb if count > 1 else self.images[index].rgb[::-1, ::-1]
            for kind_index, kind in kinds_for_image(self.config, index):
                rng = np.random.default_rng([self.config.seed, tag, index, kind_index])
                share = float(rng.uniform(*self.config.tamper_area)) if area is None else area
                result = tamper(protected.rgb, rng, kind=kind, area=share, donor=donor)
                for post in self.config.post_edit:
                    cases.append(TamperCase(index, kind, post, apply_attack(post, result.image), result.mask, result.area))
        return cases

    @cached_property
    def localization_cases(self) -> list[TamperCase]:
        return self.tamper_cases(None, tag=2)

    @cached_property
    def localization_audits(self) -> list[AuditOutput]:
        cases = self.localization_cases
        return self.audit([case.rgb for case in cases], [self.images[case.image_index].image_id for case in cases])

    # ---- localizer without the engine -------------------------------------------

    @torch.inference_mode()
    def tamper_probability(self, rgbs: list[np.ndarray]) -> torch.Tensor:
        """(B, 1, R, R) per-pixel tamper probability on the canonical grid.

        Runs the audit's first two steps (payload decoding, evidence map,
        localizer) with the loaded localizer, so it works without the full bundle.
        NOTE: mirrors `Auditor.audit_batch`; an engine method returning the
        probability map would remove the copy.
        """
        self.models.need("localizer")
        model = self.models.localizer.model
        out = []
        for start in range(0, len(rgbs), BATCH):
            canonical = canonical_stack(rgbs[start : start + BATCH], self.resolution, self.device)
            extraction = self.carrier.extract(canonical)
            soft = extraction.soft_bits.float().cpu().numpy()
            decoded = [self.codec.decode(row) for row in soft]
            expected = np.stack([self.codec.reencode(d) if d.ecc_ok else (soft[i] > 0).astype(np.uint8) for i, d in enumerate(decoded)])
            evidence = self.carrier.evidence(extraction, torch.from_numpy(expected).to(self.device))
            out.append(torch.sigmoid(model(canonical, evidence).float()).cpu())
        return torch.cat(out) if out else torch.zeros(0, 1, self.resolution, self.resolution)

    @property
    def localizer_threshold(self) -> float:
        self.models.need("localizer")
        return float(self.models.localizer.threshold)


def mean_of(values) -> float | None:
    """Return the mean of the finite values, or None when there are none."""
    array = np.asarray([float(v) for v in values], dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else None


def group_positions(kinds: list[str], posts: list[str], kind_order, post_order) -> dict[tuple[str, str], list[int]]:
    """Positions by (kind, post-edit) and (ALL_KINDS, post-edit), in table order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for post in post_order:
        for kind in (*kind_order, ALL_KINDS):
            positions = [p for p, (k, q) in enumerate(zip(kinds, posts)) if q == post and (kind == ALL_KINDS or k == kind)]
            if positions:
                groups[(kind, post)] = positions
    return groups
