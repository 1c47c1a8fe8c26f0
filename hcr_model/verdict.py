"""The verdict rules of an audit, as one pure function over the measured signals.

The order matters and follows the verdict contract: `error` rows are made by the
pipeline before any model runs, so this module decides among `unmarked`,
`forged`, `tampered` and `authentic`.
"""

from dataclasses import dataclass

AUTHENTIC = "authentic"
TAMPERED = "tampered"
FORGED = "forged"
UNMARKED = "unmarked"
ERROR = "error"
VERDICTS = (AUTHENTIC, TAMPERED, FORGED, UNMARKED, ERROR)


@dataclass(frozen=True)
class VerdictSignals:
    """What the models measured for one image."""

    watermark_score: float  # 0..1, carrier's confidence that a watermark is present
    watermark_threshold: float  # calibrated: below it the image counts as unmarked
    ecc_ok: bool  # the error-correcting code decoded
    mac_ok: bool  # the MAC verified under the configured key
    consistent: bool  # the hidden code agrees with the content outside the mask
    tampered_fraction: float  # share of pixels in the localizer's mask
    min_fraction: float  # calibrated: smaller masks are not an edit


def decide_verdict(signals: VerdictSignals) -> str:
    """Apply the verdict rules in order and return the verdict string."""
    if signals.watermark_score < signals.watermark_threshold:
        return UNMARKED

    # A payload that decodes but fails the MAC was minted without the key.
    if signals.ecc_ok and not signals.mac_ok:
        return FORGED

    payload_valid = signals.ecc_ok and signals.mac_ok
    edited = signals.tampered_fraction >= signals.min_fraction

    # A valid code that disagrees with the content outside every localized
    # region was copied from another image.
    if payload_valid and not signals.consistent:
        return FORGED

    if edited:
        return TAMPERED

    # Damaged beyond the ECC, with no localized edit to explain the damage.
    if not payload_valid:
        return UNMARKED
    return AUTHENTIC
