import pytest

from hcr_model.verdict import AUTHENTIC, FORGED, TAMPERED, UNMARKED, VerdictSignals, decide_verdict


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
    ],
)
def test_decide_verdict_rules(changes, expected):
    assert decide_verdict(signals(**changes)) == expected
