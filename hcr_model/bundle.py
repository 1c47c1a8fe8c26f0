"""Versioned model bundles: the weights and calibration one audit version uses.

`version` names both the payload format and the tokenizer weights, because
retraining the tokenizer changes every hidden code. Old versions stay loadable
so an audit can decode with the version a payload names.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# NOTE: torch is imported inside the functions that use it, so that the CLI
# driver can check a weights version (`weights_dir`) without the 3-4 s import.

logger = logging.getLogger(__name__)

DEFAULT_VERSION = "v1"

# Payload version byte for each weights version.
VERSION_BYTES = {"v1": 1}


class BundleNotFoundError(FileNotFoundError):
    """The requested weights version is not shipped or not complete."""


@dataclass(frozen=True)
class Calibration:
    """Thresholds measured on the validation split, stored beside the weights."""

    watermark_threshold: float  # watermark_score below this counts as unmarked
    consistency_tolerance: float  # max coarse colour distance of an authentic code, 0..1
    source: str  # how and on what the numbers were measured


@dataclass
class ModelBundle:
    """The loaded models of one weights version, on one device."""

    version: str
    version_byte: int
    tokenizer: torch.nn.Module
    localizer: torch.nn.Module
    localizer_threshold: float  # probability above which a pixel counts toward the edit decision
    min_fraction: float  # smaller masks are not an edit
    mask_threshold: float  # lower probability threshold for drawing the mask of an edited image
    recovery: torch.nn.Module
    calibration: Calibration
    device: torch.device
    # The restoration refiner, or None when the weights folder has no refiner.pt.
    refiner: torch.nn.Module | None = None


def weights_dir(version: str = DEFAULT_VERSION) -> Path:
    """Return the folder of a shipped weights version."""
    folder = Path(str(resources.files("hcr_model") / "weights" / version))
    if not folder.is_dir():
        shipped = sorted(p.name for p in folder.parent.iterdir() if p.is_dir()) if folder.parent.is_dir() else []
        raise BundleNotFoundError(f"weights version {version!r} not found in {folder.parent}; shipped versions: {shipped}")
    return folder


def load_calibration(folder: Path) -> Calibration:
    path = folder / "calibration.json"
    if not path.is_file():
        raise BundleNotFoundError(f"missing {path}; run scripts/calibrate_audit.py to measure it")
    data = json.loads(path.read_text())
    return Calibration(
        watermark_threshold=float(data["watermark_threshold"]),
        consistency_tolerance=float(data["consistency_tolerance"]),
        source=str(data.get("source", "")),
    )


def select_device(device: str | torch.device | None = None) -> torch.device:
    """Use the requested device, else a GPU when present, else the CPU."""
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_bundle(
    version: str = DEFAULT_VERSION, device: str | torch.device | None = None, folder: Path | None = None
) -> ModelBundle:
    """Load every model of a weights version in eval mode on one device.

    `folder` overrides where the weight files are read from (default: the
    version's folder inside the package), for weights trained outside it.
    """
    from hcr_model.localizer import load_localizer
    from hcr_model.recovery import load_recovery
    from hcr_model.restoration_refiner import load_optional_refiner
    from hcr_model.tokenizer import load_tokenizer

    folder = Path(folder) if folder is not None else weights_dir(version)
    if version not in VERSION_BYTES:
        raise BundleNotFoundError(f"weights version {version!r} has no payload version byte; known: {sorted(VERSION_BYTES)}")
    target = select_device(device)

    tokenizer = load_tokenizer(folder / "tokenizer.pt").to(target).eval()
    localizer = load_localizer(folder / "localizer.pt")
    recovery = load_recovery(folder / "recovery.pt").to(target).eval()
    refiner = load_optional_refiner(folder, target)
    calibration = load_calibration(folder)
    logger.info("loaded model bundle %s on %s", version, target)

    return assemble_bundle(version, tokenizer, localizer, recovery, calibration, target, refiner)


def assemble_bundle(
    version: str, tokenizer, localizer, recovery, calibration: Calibration, device: torch.device, refiner=None
) -> ModelBundle:
    """Build a ModelBundle from loaded models; `localizer` is a LocalizerWeights with its calibration."""
    return ModelBundle(
        version=version,
        version_byte=VERSION_BYTES[version],
        tokenizer=tokenizer,
        localizer=localizer.model.to(device).eval(),
        localizer_threshold=float(localizer.threshold),
        min_fraction=float(localizer.min_fraction),
        mask_threshold=float(localizer.mask_threshold),
        recovery=recovery,
        calibration=calibration,
        device=device,
        refiner=refiner,
    )
