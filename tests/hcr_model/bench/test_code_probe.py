"""Tests of the hidden-code category probes (`hcr_model.bench.code_probe`)."""

import numpy as np
import pytest
import torch

from hcr_model.bench import code_probe
from hcr_model.bench.suites import SUITES, check_config
from hcr_model.tokenizer import MultiScaleVQ, TokenizerConfig


def test_knn_accuracy_votes_by_cosine_neighbours():
    # Two classes along two directions; the length of a vector must not matter.
    train_x = np.array([[1.0, 0.0], [5.0, 0.2], [3.0, -0.1], [0.0, 1.0], [0.1, 4.0], [-0.2, 2.0]])
    train_y = np.array(["a", "a", "a", "b", "b", "b"])
    test_x = np.array([[10.0, 1.0], [0.5, 9.0]])
    assert code_probe.knn_accuracy(train_x, train_y, test_x, np.array(["a", "b"]), k=3) == 1.0
    assert code_probe.knn_accuracy(train_x, train_y, test_x, np.array(["b", "a"]), k=3) == 0.0


def test_linear_accuracy_separates_separable_classes():
    rng = np.random.default_rng(0)
    train_x = np.concatenate([rng.normal(-2, 0.5, (20, 3)), rng.normal(2, 0.5, (20, 3))])
    train_y = np.array(["low"] * 20 + ["high"] * 20)
    test_x = np.array([[-2.0, -2.0, -2.0], [2.0, 2.0, 2.0]])
    assert code_probe.linear_accuracy(train_x, train_y, test_x, np.array(["low", "high"])) == 1.0


def test_probe_shapes_and_scores():
    torch.manual_seed(0)
    model = MultiScaleVQ(TokenizerConfig(channels=(8, 8, 16, 16))).eval()
    images = torch.rand(6, 3, 256, 256)
    labels = np.array(["x", "y"] * 3)
    features = code_probe.code_features(model, images, batch_size=4)
    assert features["code_embedding"].shape == (6, model.cfg.embedding_dim)
    assert features["code_latent"].shape == (6, model.cfg.code_dim * 9)

    # Labels alternate, so the constant guess of the most common train label scores one half.
    row = code_probe.probe_tokenizer(model, (images, labels), {"test": (images[:2], labels[:2])})
    assert row["train_samples"] == 6
    assert row["test_photos"] == 2
    assert 0.0 <= row["test_code_embedding_knn"] <= 1.0
    assert row["test_majority"] == 0.5


def test_absent_probe_control_raises():
    config = SUITES["full"].model_copy(update={"probe_controls": ("/nonexistent/tokenizer.pt",)})
    with pytest.raises(ValueError, match="probe control tokenizer weights not found"):
        check_config(config)
