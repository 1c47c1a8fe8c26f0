"""Localizer: shapes, the weight file round trip, and the shipped v1 weights on real photos."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hcr_model.imaging import to_canonical
from hcr_model.localizer import (
    Localizer,
    LocalizerConfig,
    LocalizerWeights,
    evidence_background,
    load_localizer,
    predict_mask,
    save_localizer,
    weights_path,
)

PHOTOS = Path(__file__).resolve().parents[1] / "fixtures" / "photos"
SHIPPED = weights_path("v1")
needs_weights = pytest.mark.skipif(
    not SHIPPED.is_file(), reason=f"{SHIPPED} not trained yet (hcr train localizer --export {SHIPPED})"
)


def canonical_photo(name: str) -> torch.Tensor:
    array = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
    return to_canonical(torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0, 256)


def test_forward_shapes():
    model = Localizer().eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 96), torch.rand(2, 1, 8, 12))
    assert logits.shape == (2, 1, 64, 96)
    assert logits.dtype == torch.float32


def test_background_defaults_to_evidence_median():
    model = Localizer().eval()
    x, evidence = torch.rand(2, 3, 64, 64), torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        implicit = model(x, evidence)
        explicit = model(x, evidence, evidence_background(evidence))
        shifted = model(x, evidence, evidence_background(evidence) + 0.3)
    assert evidence_background(evidence).shape == (2,)
    assert torch.allclose(implicit, explicit)
    assert not torch.allclose(implicit, shifted)


def test_parameter_count_is_small():
    count = sum(p.numel() for p in Localizer().parameters())
    assert 100_000 < count < 1_000_000


def test_evidence_shape_mismatch_raises():
    with pytest.raises(ValueError, match="evidence must be"):
        Localizer()(torch.rand(1, 3, 64, 64), torch.rand(1, 1, 16, 16))


def test_side_not_multiple_of_16_raises():
    with pytest.raises(ValueError, match="multiple of 16"):
        Localizer()(torch.rand(1, 3, 72, 72), torch.rand(1, 1, 9, 9))


def test_predict_mask_bare_model_needs_threshold():
    with pytest.raises(ValueError, match="threshold is required"):
        predict_mask(Localizer(), torch.rand(1, 3, 32, 32), torch.rand(1, 1, 4, 4))


def test_predict_mask_outputs():
    probability, mask = predict_mask(Localizer(), torch.rand(2, 3, 32, 32), torch.rand(2, 1, 4, 4), threshold=0.5)
    assert probability.shape == mask.shape == (2, 1, 32, 32)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, probability > 0.5)
    assert float(probability.min()) >= 0.0
    assert float(probability.max()) <= 1.0


def test_save_load_round_trip(tmp_path):
    model = Localizer(LocalizerConfig(widths=(8, 16, 24, 32))).eval()
    path = tmp_path / "localizer.pt"
    save_localizer(path, model, threshold=0.42, min_fraction=0.0075, version="v1", calibration={"split": "val"})

    loaded = load_localizer(path)
    assert isinstance(loaded, LocalizerWeights)
    assert loaded.threshold == pytest.approx(0.42)
    assert loaded.min_fraction == pytest.approx(0.0075)
    assert loaded.calibration == {"split": "val"}
    assert loaded.model.config.widths == (8, 16, 24, 32)
    x, evidence = torch.rand(1, 3, 32, 32), torch.rand(1, 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x, evidence), model(x, evidence), atol=1e-6)


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="hcr train localizer"):
        load_localizer(tmp_path / "absent.pt")


def test_load_wrong_format_raises(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(ValueError, match="not a localizer weight file"):
        load_localizer(path)


@needs_weights
def test_shipped_weights_carry_calibration():
    weights = load_localizer("v1")
    assert 0.0 < weights.threshold < 1.0
    assert 0.0 < weights.min_fraction < 0.5
    assert weights.calibration["split"] == "val"
    assert "rule" in weights.calibration
    assert 0.0 < weights.mask_threshold <= weights.threshold


@needs_weights
def test_shipped_min_fraction_counts_small_edits():
    assert load_localizer("v1").min_fraction < 0.05


@pytest.fixture(scope="module")
def protected_fixture():
    """A canonical fixture photo, protected on the 256 grid and saved as uint8, and the sample maker."""
    from hcr_model.training.localizer import SampleMaker, training_key

    torch.set_num_threads(1)
    maker = SampleMaker(training_key("tests/localizer"))
    protected, _ = maker.protect(canonical_photo("astronaut.jpg"), np.random.default_rng(0))
    return maker, protected.float() / 255.0


@needs_weights
def test_pasted_region_is_localized(protected_fixture):
    maker, protected = protected_fixture
    donor = canonical_photo("chelsea.jpg")

    # Paste a 128 × 112 patch of another photo (21.9 % of the image, well above
    # the v1 min_fraction), off the 8-pixel grid.
    edited = protected.clone()
    truth = torch.zeros(1, 1, 256, 256, dtype=torch.bool)
    top, left, height, width = 117, 37, 112, 128
    edited[..., top : top + height, left : left + width] = donor[..., 40 : 40 + height, 60 : 60 + width]
    truth[..., top : top + height, left : left + width] = True
    edited = (edited * 255).round() / 255

    weights = load_localizer("v1")
    evidence, _ = maker.evidence(edited)
    _, mask = weights.predict(edited, evidence)
    iou = float((mask & truth).sum()) / float((mask | truth).sum())
    assert iou >= 0.5, f"IoU {iou:.3f} of the pasted region"
    assert bool(weights.is_edited(mask)[0])


@needs_weights
@pytest.mark.parametrize("attack", ["identity", "jpeg75"])
def test_untouched_protected_photo_is_not_edited(protected_fixture, attack):
    from hcr_model.bench.attacks import ATTACKS

    maker, protected = protected_fixture
    received = ATTACKS[attack].apply(protected)
    weights = load_localizer("v1")
    evidence, ecc_ok = maker.evidence(received)
    assert bool(ecc_ok[0])
    _, mask = weights.predict(received, evidence)
    fraction = float(mask.float().mean())
    assert fraction < weights.min_fraction, f"mask covers {fraction:.4f} of an untouched image after {attack}"
    assert not bool(weights.is_edited(mask)[0])


def histograms(negative: list[dict[int, int]], positive: list[dict[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Build (positive, negative) per-image probability histograms from {bin: pixel count} per image."""
    from hcr_model.training.localizer import N_BINS

    arrays = []
    for images in (positive, negative):
        counts = np.zeros((len(images), N_BINS), dtype=np.int64)
        for row, bins in enumerate(images):
            for index, count in bins.items():
                counts[row, index] = count
        arrays.append(counts)
    return arrays[0], arrays[1]


def test_calibration_limits_each_attacks_false_positives():
    from hcr_model.training.localizer import choose_thresholds, threshold_curves

    # Two clean images, one per attack: "blur1" has probability 0.6 on a tenth of its
    # pixels, "jpeg75" none. One tampered image: its edited half at 0.9, the rest at 0.
    pixels = 100
    clean = histograms([{600: 10, 0: 90}, {0: 100}], [{}, {}])
    tampered = histograms([{0: 50}], [{900: 50}])
    curves = threshold_curves(tampered, clean, 0.5, pixels, ["blur1", "jpeg75"])

    # Pooled, the blurred image's false pixels are 5 % of all clean pixels; on its own, 10 %.
    assert curves.clean_fpr[600] == pytest.approx(0.05)
    assert curves.clean_fpr_worst[600] == pytest.approx(0.10)
    decision, mask = choose_thresholds(curves, max_fpr=0.06)
    assert decision > 600  # only thresholds above the blurred image's false pixels keep its FPR at 6 %
    assert mask >= 1


def test_kind_weights_skew_the_training_kinds():
    from hcr_model.bench.tampering import TAMPER_KINDS
    from hcr_model.training.localizer import parse_kind_weights

    assert parse_kind_weights("") is None
    probabilities = parse_kind_weights("recolor:3,text:0")
    assert probabilities.sum() == pytest.approx(1.0)
    assert probabilities[TAMPER_KINDS.index("recolor")] == pytest.approx(3 / 8)  # five kinds at 1, recolor 3, text 0
    assert probabilities[TAMPER_KINDS.index("text")] == 0.0
    with pytest.raises(ValueError, match="unknown tampering kind 'recolour'"):
        parse_kind_weights("recolour:2")
    with pytest.raises(ValueError, match="needs a number"):
        parse_kind_weights("text:lots")


def test_decision_budget_apart_from_mask_budget():
    from hcr_model.training.localizer import choose_thresholds, threshold_curves

    # One clean image with probability 0.3 on 2 % of its pixels and 0.7 on 0.5 %.
    # One tampered image: its edited half at 0.9, the rest at 0.
    pixels = 1000
    clean = histograms([{300: 20, 700: 5, 0: 975}], [{}])
    tampered = histograms([{0: 500}], [{900: 500}])
    curves = threshold_curves(tampered, clean, 0.5, pixels, ["blur1"])

    shared_decision, shared_mask = choose_thresholds(curves, max_fpr=0.01)
    decision, mask = choose_thresholds(curves, max_fpr=0.01, decision_max_fpr=0.001)
    assert mask == shared_mask  # the mask threshold keeps the pooled budget
    assert 300 < shared_decision <= 700  # above the 0.3 pixels the FPR is 0.5 %, within 1 %
    assert decision > 700  # a 0.1 % budget also needs the threshold above the 0.7 pixels
