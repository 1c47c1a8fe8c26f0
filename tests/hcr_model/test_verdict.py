import pytest

from hcr_model.verdict import (
    AUTHENTIC,
    COPY_CARRIER_ZSCORE_FREE,
    COPY_CARRIER_ZSCORE_MAX,
    COPY_CLIPPED_SHARE_MAX,
    COPY_TEMPLATE_SLOPE,
    COPY_TEMPLATE_ZSCORE,
    FORGED,
    TAMPERED,
    UNMARKED,
    VerdictSignals,
    copied_mark,
    decide_verdict,
)


def signals(**changes) -> VerdictSignals:
    base = dict(
        watermark_score=0.9,
        watermark_threshold=0.5,
        ecc_ok=True,
        mac_ok=True,
        consistent=True,
        tampered_fraction=0.0,
        min_fraction=0.01,
    )
    base.update(changes)
    return VerdictSignals(**base)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, AUTHENTIC),
        ({"watermark_score": 0.1}, UNMARKED),
        # No watermark wins over everything else, an edit included.
        ({"watermark_score": 0.1, "tampered_fraction": 0.3}, UNMARKED),
        ({"mac_ok": False}, FORGED),
        ({"mac_ok": False, "tampered_fraction": 0.3}, FORGED),
        ({"consistent": False}, FORGED),
        ({"tampered_fraction": 0.2}, TAMPERED),
        # An edit that broke the payload is still a tampering.
        ({"ecc_ok": False, "mac_ok": False, "tampered_fraction": 0.2}, TAMPERED),
        # A valid payload inconsistent with the content outside the mask is forged even with a mask.
        ({"consistent": False, "tampered_fraction": 0.2}, FORGED),
        # Damage beyond the ECC with no localized edit: unmarked.
        ({"ecc_ok": False, "mac_ok": False}, UNMARKED),
        ({"tampered_fraction": 0.009}, AUTHENTIC),
        # A copied watermark reads as unmarked on its carrier bits; the template check calls it forged.
        ({"copied_mark": True, "watermark_score": 0.1, "ecc_ok": False, "mac_ok": False}, FORGED),
        ({"copied_mark": True, "ecc_ok": False, "mac_ok": False, "tampered_fraction": 0.2}, FORGED),
        # A valid payload outranks the copy check: content binding decides.
        ({"copied_mark": True}, AUTHENTIC),
    ],
)
def test_decide_verdict_rules(changes, expected):
    assert decide_verdict(signals(**changes)) == expected


def test_copied_mark_conditions():
    assert copied_mark(COPY_TEMPLATE_ZSCORE, COPY_CARRIER_ZSCORE_FREE, 0.0, 224, 224)
    assert not copied_mark(COPY_TEMPLATE_ZSCORE - 0.1, 0.0, 0.0, 512, 224)  # template too weak: unmarked or blurred
    # Bits that partly agree need a stronger template.
    partly = COPY_CARRIER_ZSCORE_FREE + 2.0
    assert copied_mark(COPY_TEMPLATE_ZSCORE + 2.0 * COPY_TEMPLATE_SLOPE, partly, 0.0, 512, 224)
    assert not copied_mark(COPY_TEMPLATE_ZSCORE + 2.0 * COPY_TEMPLATE_SLOPE - 0.1, partly, 0.0, 512, 224)
    assert not copied_mark(50.0, COPY_CARRIER_ZSCORE_MAX + 0.1, 0.0, 512, 224)  # the bits agree: a genuine, damaged watermark
    assert not copied_mark(50.0, 0.0, COPY_CLIPPED_SHARE_MAX, 512, 224)  # clipping breaks genuine bits too
    assert not copied_mark(50.0, 0.0, 0.0, 223, 224)  # so do blur and downscaling below the reliable size
