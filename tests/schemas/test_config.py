"""Run configs: defaults, validation, and the flat options shared by the CLI and the API."""

import pytest
from pydantic import ValidationError

from flows.options import RUN_FIELDS, build_config
from schemas.config import AuditConfig, ProtectConfig, RunOptions


def test_defaults():
    config = AuditConfig(source="photos", dest="out")
    assert config.plan.shard_size == 256
    assert config.ray.address is None
    assert config.ray.object_store_mb == 256
    assert config.prefect.api_url is None
    assert config.model.version == "v1"
    assert config.limits.max_pixels == 64_000_000
    assert config.limits.key_mismatch_fraction == 0.5
    assert config.sweep_id is None


def test_config_has_no_key_field():
    names = set(ProtectConfig.model_fields) | set(AuditConfig.model_fields)
    for group in ("storage", "ray", "prefect", "model", "limits", "plan"):
        names |= set(RunOptions.model_fields[group].annotation.model_fields)
    assert not {"key", "hcr_key", "secret"} & names


def test_every_option_documented():
    for model in (ProtectConfig, AuditConfig):
        for name, info in model.model_fields.items():
            if name in RunOptions.model_fields and name != "progress":
                continue
            assert info.description, f"{model.__name__}.{name} has no description"
    for group in ("storage", "ray", "prefect", "model", "limits", "plan"):
        options = RunOptions.model_fields[group].annotation
        for name, info in options.model_fields.items():
            assert info.description, f"{options.__name__}.{name} has no description"


def test_flat_options_build_nested():
    config = build_config(AuditConfig, "s3://b/photos", "s3://b/audit", batch_size=4, s3_endpoint_url="http://127.0.0.1:9",
                          sweep_id="s1", progress=False, ray_address=None)
    assert config.ray.batch_size == 4
    assert config.storage.s3_endpoint_url == "http://127.0.0.1:9"
    assert config.sweep_id == "s1"
    assert config.progress is False
    assert config.ray.address is None


def test_flat_options_reject_unknown():
    with pytest.raises(TypeError, match="unknown option 'batchsize'"):
        build_config(AuditConfig, "a", "b", batchsize=4)


def test_invalid_values_rejected():
    with pytest.raises(ValidationError):
        build_config(ProtectConfig, "a", "b", jpeg_quality=101)
    with pytest.raises(ValidationError):
        build_config(AuditConfig, "a", "b", num_actors=0)


def test_flat_names_resolve():
    for name, (group, field) in RUN_FIELDS.items():
        assert field in RunOptions.model_fields[group].annotation.model_fields, name
