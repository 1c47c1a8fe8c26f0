"""Benchmark suites: which images, attacks and sizes `hcr bench` runs.

`quick` runs on the unit-test photos in `tests/fixtures/photos/` and is sized
to finish in a few minutes on a 2-core CPU (CI runs it). `full` runs on the
test split of the benchmark cache (`hcr data build`). Every image enters at
its own size: the models squash it to the canonical R x R grid, as an audit
does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from hcr_model.bench.attacks import ATTACKS
from hcr_model.bench.tampering import TAMPER_KINDS

logger = logging.getLogger(__name__)

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "photos"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class SuiteConfig(BaseModel):
    """Sizes and grids of one benchmark suite; recorded in the JSON report."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="suite name")
    source: str = Field(description="'fixtures' (tests/fixtures/photos) or 'test' (the test split of the cache)")
    attacks: tuple[str, ...] = Field(description="robustness attacks, names from ATTACKS ('identity' = clean)")
    peers: tuple[str, ...] = Field(("dwtDct", "dwtDctSvd", "rivaGan"), description="invisible-watermark peers")
    rivagan_images: int = Field(description="max images RivaGAN embeds and reads (seconds per image and read on a CPU); 0 = all")
    rivagan_attacks: tuple[str, ...] = Field(description="attacks RivaGAN is read under; empty = all of `attacks`")
    tamper_kinds: tuple[str, ...] = Field(TAMPER_KINDS, description="tampering kinds")
    kinds_per_image: int = Field(0, description="edits per image, kinds taken in turn across images; 0 = every kind on every image")
    tamper_area: tuple[float, float] = Field((0.05, 0.35), description="localization: edited share of the pixels, drawn uniformly")
    recovery_area: float = Field(0.25, description="recovery: edited share of the pixels")
    post_edit: tuple[str, ...] = Field(("identity", "jpeg75"), description="processing after the edit (attack names)")
    global_attacks: tuple[str, ...] = Field(description="whole-image processing for the false-positive rows")
    forgery_estimators: tuple[str, ...] = Field(
        ("median3", "gaussian1", "median3x2", "oracle"),
        description="copy-attack watermark estimates: denoising filter or 'oracle' (protected - original), optional gain (x2 = doubled)",
    )
    probe_train_tiles: int = Field(5, description="tokenizer probe: fixed tiles per train photo the probes are fitted on")
    probe_controls: tuple[str, ...] = Field(
        (), description="tokenizer probe: more tokenizer weight files probed beside the bench's own (for example one trained with --no-distill)"
    )
    speed_images: int = Field(8, description="images per timed batch")
    speed_seconds: float = Field(2.0, description="minimum wall time of each speed measurement, in seconds")
    seed: int = Field(0, description="seed of every random draw (payloads, edits, regions)")


def kinds_for_image(config: SuiteConfig, index: int) -> list[tuple[int, str]]:
    """(position in `tamper_kinds`, kind) of the edits image `index` gets."""
    kinds = config.tamper_kinds
    if config.kinds_per_image <= 0 or config.kinds_per_image >= len(kinds):
        return list(enumerate(kinds))
    first = index * config.kinds_per_image
    return [((first + j) % len(kinds), kinds[(first + j) % len(kinds)]) for j in range(config.kinds_per_image)]


SUITES: dict[str, SuiteConfig] = {
    "quick": SuiteConfig(
        name="quick",
        source="fixtures",
        attacks=("identity", "jpeg75", "jpeg50", "blur1", "noise0.02", "resize0.5", "crop90", "brightness+30", "jpeg_resize"),
        rivagan_images=1,
        rivagan_attacks=("identity",),
        kinds_per_image=2,
        global_attacks=("jpeg75", "blur1", "resize0.5"),
        speed_images=4,
        speed_seconds=0.5,
    ),
    "full": SuiteConfig(
        name="full",
        source="test",
        attacks=tuple(ATTACKS),
        rivagan_images=4,
        rivagan_attacks=(),
        kinds_per_image=3,
        global_attacks=("jpeg90", "jpeg75", "jpeg50", "blur1", "noise0.02", "resize0.5", "brightness+30", "contrast-30"),
    ),
}


@dataclass
class BenchImage:
    """One benchmark image at its own size."""

    image_id: str
    rgb: np.ndarray  # (H, W, 3) uint8
    label: str | None  # the photo's category; None for the fixtures


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).copy()


def load_fixture_images(folder: Path = FIXTURES_DIR) -> list[BenchImage]:
    """Read the fixture photos in name order, one per stem.

    `coffee.png` is a smaller copy of `coffee.jpg`; a gallery holding both
    would make top-1 image retrieval ambiguous, so the first file of a stem wins.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"fixture photos not found in {folder}; the quick suite needs a source checkout")
    images, stems = [], set()
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.stem in stems:
            continue
        stems.add(path.stem)
        images.append(BenchImage(image_id=path.name, rgb=_read_rgb(path), label=None))
    return images


def load_test_images() -> list[BenchImage]:
    """Read every photo of the test split; raises DatasetNotBuiltError when the cache is missing."""
    from hcr_model.data.photos import load_photos

    return [
        BenchImage(image_id=record.photo_id, rgb=_read_rgb(record.file), label=record.category)
        for record in load_photos("test")
    ]


def load_suite_images(config: SuiteConfig) -> list[BenchImage]:
    """Return every image of the suite's source, in a fixed order."""
    if config.source == "fixtures":
        return load_fixture_images()
    if config.source == "test":
        return load_test_images()
    raise ValueError(f"unknown image source {config.source!r}; expected 'fixtures' or 'test'")


def check_config(config: SuiteConfig) -> None:
    """Raise ValueError for attack or kind names the grids do not define, or absent probe control weights."""
    names = set(config.attacks) | set(config.rivagan_attacks) | set(config.post_edit) | set(config.global_attacks)
    unknown = sorted(names - set(ATTACKS))
    if unknown:
        raise ValueError(f"unknown attacks {unknown}; expected names from hcr_model.bench.attacks.ATTACKS")
    kinds = sorted(set(config.tamper_kinds) - set(TAMPER_KINDS))
    if kinds:
        raise ValueError(f"unknown tamper kinds {kinds}; expected names from {TAMPER_KINDS}")
    absent = [path for path in config.probe_controls if not Path(path).is_file()]
    if absent:
        raise ValueError(f"probe control tokenizer weights not found: {absent}; pass .pt files written by `hcr train tokenizer --export`")
