"""Tests of the `hcr bench` runner and its metric plumbing, on the fixture photos."""

import json

import numpy as np
import pytest
import torch

from hcr_model.bench import runner
from hcr_model.bench.measure_context import (
    ALL_KINDS,
    BENCH_KEY,
    SectionSkipped,
    canonical_mask,
    embed_full_resolution,
    group_positions,
    mean_of,
    run_part,
)
from hcr_model.bench.measure_forgery import copy_watermark, estimate_watermark
from hcr_model.bench.measure_speed import images_per_second
from hcr_model.bench.measure_tokenizer import perplexity
from hcr_model.bench.report_markdown import RENDERERS, fmt, render
from hcr_model.bench.suites import SUITES, check_config, kinds_for_image, load_fixture_images
from hcr_model.bench.tampering import TAMPER_KINDS
from hcr_model.bundle import weights_dir
from hcr_model.engine import rgb_to_tensor
from hcr_model.imaging import to_canonical
from hcr_model.watermark.dct import DctCarrier
from hcr_model.watermark.learned import WEIGHTS_NAME as LEARNED_WEIGHTS

SECTION_KEYS = {
    "imperceptibility": {"rows", "notes"},
    "robustness": {"rows", "notes"},
    "localization": {"rows", "false_positives", "notes", "errors"},
    "recovery": {"rows", "methods", "notes", "errors"},
    "retrieval": {"rows", "exact_lookup", "notes", "errors"},
    "forgery": {"rows", "notes"},
    "tokenizer": {"rows", "images", "probes", "encode_decode_images_per_s", "notes"},
    "speed": {"rows", "threads", "device", "load_average_1min", "notes", "errors"},
}


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    status = runner.main(
        ["--suite", "quick", "--limit", "2", "--peers", "dwtDct", "--attacks", "identity,jpeg75", "--out", str(out)]
    )
    return status, json.loads((out / "results.json").read_text()), (out / "results.md").read_text()


def test_quick_suite_exit_status(quick_report):
    status, report, _ = quick_report
    failures = {name: s.get("reason") or s.get("errors") for name, s in report["sections"].items() if s["status"] == "error" or s.get("errors")}
    assert failures == {}
    assert status == 0


def test_quick_suite_has_every_section(quick_report):
    _, report, _ = quick_report
    assert list(report["sections"]) == list(runner.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] in ("ok", "skipped"), name
        assert "seconds" in section
        if section["status"] == "ok":
            assert SECTION_KEYS[name] <= set(section), name
        else:
            assert section["reason"], name


def test_quick_suite_header(quick_report):
    _, report, _ = quick_report
    assert report["suite"] == "quick"
    assert report["images"] == 2
    assert report["gallery"] == 6
    assert {"platform", "cpus", "torch", "threads", "device"} <= set(report["machine"])
    assert report["machine"]["threads"] == 1


def test_quick_suite_carrier_rows(quick_report):
    # The carrier needs no trained weights, so these rows always exist.
    _, report, _ = quick_report
    imperceptibility = {row["method"]: row for row in report["sections"]["imperceptibility"]["rows"]}
    # The learned backend joins when the shipped weights include it.
    methods = {"hcr", "hcr-32", "dwtDct"} | ({"learned"} if (weights_dir("v1") / LEARNED_WEIGHTS).is_file() else set())
    assert set(imperceptibility) == methods
    assert imperceptibility["hcr"]["bits"] == 256
    assert imperceptibility["hcr-32"]["bits"] == 32
    assert imperceptibility["hcr"]["psnr_db"] > 30
    robustness = {(row["method"], row["attack"]): row for row in report["sections"]["robustness"]["rows"]}
    assert set(robustness) == {(m, a) for m in methods for a in ("identity", "jpeg75")}
    assert robustness[("hcr", "identity")]["bit_accuracy"] == 1.0
    assert robustness[("hcr", "identity")]["exact_rate"] == 1.0


def test_quick_suite_markdown(quick_report):
    _, report, markdown = quick_report
    for title, _ in RENDERERS.values():
        assert f"## {title}" in markdown
    assert report["command"] in markdown


def test_runner_rejects_unknown_section(tmp_path, capsys):
    assert runner.main(["--sections", "nonsense", "--out", str(tmp_path)]) == 2
    assert "unknown sections" in capsys.readouterr().err


def test_check_config_rejects_unknown_attack():
    config = SUITES["quick"].model_copy(update={"attacks": ("identity", "jpeg7")})
    with pytest.raises(ValueError, match="jpeg7"):
        check_config(config)


def test_suites_are_valid():
    for config in SUITES.values():
        check_config(config)


def test_fixture_images_one_per_stem():
    images = load_fixture_images()
    stems = [image.image_id.rsplit(".", 1)[0] for image in images]
    assert len(stems) == len(set(stems)) == 6
    assert all(image.rgb.dtype == np.uint8 and image.rgb.ndim == 3 for image in images)


def test_kinds_for_image_cover_every_kind():
    config = SUITES["quick"]
    seen = {kind for index in range(6) for _, kind in kinds_for_image(config, index)}
    assert seen == set(TAMPER_KINDS)
    assert all(len(kinds_for_image(config, index)) == 2 for index in range(6))
    every = SUITES["full"].model_copy(update={"kinds_per_image": 0})
    assert kinds_for_image(every, 3) == list(enumerate(TAMPER_KINDS))


def test_group_positions_order_and_members():
    groups = group_positions(["blur", "text", "blur", "text"], ["identity", "identity", "jpeg75", "jpeg75"], ("text", "blur"), ("identity", "jpeg75"))
    assert list(groups) == [("text", "identity"), ("blur", "identity"), (ALL_KINDS, "identity"), ("text", "jpeg75"), ("blur", "jpeg75"), (ALL_KINDS, "jpeg75")]
    assert groups[(ALL_KINDS, "jpeg75")] == [2, 3]
    assert groups[("blur", "identity")] == [0]


def test_embed_full_resolution_reads_back():
    image = load_fixture_images()[1].rgb  # chelsea, 451 x 300
    carrier = DctCarrier(BENCH_KEY, n_bits=32)
    bits = np.random.default_rng(0).integers(0, 2, 32, dtype=np.uint8)
    marked = embed_full_resolution(carrier, image, bits, torch.device("cpu"))
    assert marked.shape == image.shape
    assert marked.dtype == np.uint8
    soft = carrier.extract(to_canonical(rgb_to_tensor(marked))).soft_bits[0].numpy()
    assert np.array_equal((soft > 0).astype(np.uint8), bits)


def test_canonical_mask_half_covered_pixels():
    mask = np.zeros((100, 60), dtype=bool)
    mask[:50] = True
    resized = canonical_mask(mask, 32)
    assert resized.shape == (1, 1, 32, 32)
    assert resized[0, 0, :16].all()
    assert not resized[0, 0, 16:].any()


def test_oracle_copy_carries_exact_residual():
    rng = np.random.default_rng(1)
    original = rng.integers(20, 230, (40, 30, 3), dtype=np.uint8)
    protected = (original.astype(int) + rng.integers(-2, 3, original.shape)).astype(np.uint8)
    residual = estimate_watermark(protected, "oracle", original)
    assert np.array_equal(residual, protected.astype(np.float32) - original)
    target = np.full((40, 30, 3), 128, dtype=np.uint8)
    assert np.array_equal(copy_watermark(residual, target).astype(int) - 128, residual.astype(int))


def test_denoising_estimate_gain():
    protected = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    single = estimate_watermark(protected, "median3")
    double = estimate_watermark(protected, "median3x2")
    assert np.allclose(double, 2 * single)
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate_watermark(protected, "wiener")


def test_copy_watermark_resizes_and_clips():
    residual = np.full((10, 10, 3), 300.0, dtype=np.float32)
    copy = copy_watermark(residual, np.zeros((20, 16, 3), dtype=np.uint8))
    assert copy.shape == (20, 16, 3)
    assert (copy == 255).all()


def test_perplexity_known_histograms():
    assert perplexity(np.array([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity(np.array([0, 9, 0])) == pytest.approx(1.0)
    assert perplexity(np.zeros(3, dtype=int)) == 0.0


def test_mean_of_ignores_non_finite():
    assert mean_of([1.0, float("inf"), 3.0, float("nan")]) == 2.0
    assert mean_of([]) is None


def test_run_part_records_skip_and_failure():
    notes, errors = [], []

    def skip():
        raise SectionSkipped("tokenizer: not found")

    def fail():
        raise RuntimeError("broken")

    assert run_part(lambda: 3, "ok part", notes, errors) == 3
    assert run_part(skip, "code rows", notes, errors) is None
    assert run_part(fail, "audit rows", notes, errors) is None
    assert notes == ["code rows left out: tokenizer: not found"]
    assert errors == ["audit rows failed: RuntimeError: broken"]


def test_images_per_second_counts_images():
    calls = []
    rate = images_per_second(lambda: calls.append(1), images=4, seconds=0.01)
    assert rate > 0
    assert len(calls) >= 2  # warm-up plus at least one timed call


def test_render_skipped_section():
    report = {
        "suite": "quick", "command": "hcr bench", "date": "2026-01-01 00:00", "seconds": 1.0,
        "machine": {"platform": "p", "cpus": 2, "torch": "t", "threads": 1, "device": "cpu"},
        "weights": "w", "images": 2, "gallery": 6, "protection": "p",
        "sections": {"forgery": {"status": "skipped", "reason": "bundle: missing", "seconds": 0.0}},
    }
    page = render(report)
    assert "## Forgery (copy attack)" in page
    assert "**skipped**: bundle: missing" in page


def test_fmt_cells():
    assert fmt(None) == "–"
    assert fmt(0.12345) == "0.123"
    assert fmt(3) == "3"
    assert fmt(True) == "yes"
