"""Python API mirroring the CLI: `protect`, `audit` and `verify`.

Options are the CLI's long options with underscores (`--batch-size 16` is
`batch_size=16`); `hcr protect --help` lists them with defaults and units.

    from flows.api import protect, audit
    protect("photos/", "s3://bucket/hcr", labels="labels.csv", s3_endpoint_url="http://127.0.0.1:9000")
    summary = audit("photos-copy/", "s3://bucket/audits", registry="s3://bucket/hcr")
    print(summary.format())
"""

import logging
import os
from pathlib import Path
from typing import Any

from flows.options import build_config
from flows.runtime import head_start, prefect_settings, prepare_environment
from flows.summary import RunSummary
from flows.verify import VerifyReport, verify_protect, verify_sweep
from schemas.config import AuditConfig, ModelOptions, ProtectConfig, RunOptions, StorageOptions

logger = logging.getLogger(__name__)


def _check_key(model: ModelOptions, create: bool) -> None:
    """Fail before any actor starts when the key is missing; protect may create one.

    The driver only checks: the actors load the key themselves, from their
    own environment or key file.
    """
    from hcr_model.keys import ENV_KEY, ENV_KEY_FILE, load_key

    if model.key_file:
        if not Path(model.key_file).expanduser().is_file():
            raise FileNotFoundError(f"key file {model.key_file} (--key-file) does not exist")
        return
    had_key = bool(os.environ.get(ENV_KEY) or os.environ.get(ENV_KEY_FILE))
    key = load_key(create=create)
    if not had_key:
        # load_key found or created the default key file. Local actors inherit
        # this environment; a remote cluster needs the same key configured.
        logger.info("using the default key file (key_id %s)", key.key_id)


def _check_weights(config: RunOptions) -> None:
    """Fail early when a local run asks for a weights version this install does not ship."""
    if config.ray.address is None:
        from hcr_model.bundle import weights_dir

        weights_dir(config.model.version)  # raises BundleNotFoundError, naming the shipped versions


def run_protect(config: ProtectConfig) -> RunSummary:
    prepare_environment(config.ray, config.prefect)
    _check_weights(config)
    _check_key(config.model, create=True)

    def prestart(local: bool) -> None:
        from actors.pool import prestart_protect_pool
        from flows.ahead import try_ahead
        from flows.protect_flow import start_ahead

        prestart_protect_pool(config.ray, config.model, local)
        try_ahead(lambda: start_ahead(config))

    with prefect_settings(config.prefect), head_start(config.ray, prestart):
        from flows.protect_flow import protect_flow

        return protect_flow(config)


def run_audit(config: AuditConfig) -> RunSummary:
    prepare_environment(config.ray, config.prefect)
    _check_key(config.model, create=False)
    _check_weights(config)
    # Fix the sweep id now: the shards started ahead and the flow must agree
    # on it even when the UTC date changes in between.
    from flows.audit_flow import sweep_identity

    archive, sweep_id = sweep_identity(config)
    config = config.model_copy(update={"archive": archive, "sweep_id": sweep_id})

    def prestart(local: bool) -> None:
        from actors.pool import prestart_audit_pool
        from flows.ahead import try_ahead
        from flows.audit_flow import start_ahead

        prestart_audit_pool(config.ray, config.model, local, config.registry, config.storage)
        try_ahead(lambda: start_ahead(config))

    with prefect_settings(config.prefect), head_start(config.ray, prestart):
        from flows.audit_flow import audit_flow

        return audit_flow(config)


def protect(source: str, dest: str, *, archive: str | None = None, labels: str | None = None, **options: Any) -> RunSummary:
    """Protect every image under `source` into `dest`; return the run summary."""
    config = build_config(ProtectConfig, source, dest, archive=archive, labels=labels, **options)
    return run_protect(config)


def audit(
    source: str,
    dest: str,
    *,
    registry: str | None = None,
    archive: str | None = None,
    sweep_id: str | None = None,
    **options: Any,
) -> RunSummary:
    """Audit every image under `source` into `dest`; return the run summary."""
    config = build_config(AuditConfig, source, dest, registry=registry, archive=archive, sweep_id=sweep_id, **options)
    return run_audit(config)


def verify(
    dest: str, *, sweep_id: str | None = None, archive: str | None = None, s3_endpoint_url: str | None = None
) -> VerifyReport:
    """Compare an audit sweep (`sweep_id`) or a protect run (`archive`) with its manifest."""
    options = StorageOptions(s3_endpoint_url=s3_endpoint_url)
    if sweep_id:
        return verify_sweep(dest, sweep_id, options)
    if archive:
        return verify_protect(dest, archive, options)
    raise ValueError("pass sweep_id (an audit sweep) or archive (a protect run) to verify")
