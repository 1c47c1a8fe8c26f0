"""Shared test setup: one thread for torch, loopback-only services, a test key.

The environment is set at import, before Ray starts or Prefect is imported,
because both read it then. The session-scoped services start only for tests
that request them: a local Ray, Prefect's test harness with its temporary API
server, and an S3-compatible moto server, all on 127.0.0.1. Ray and Prefect
took 20-70 s together on a busy 2-core machine; moto takes under 1 s.
"""

import atexit
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path

# A fixed 256-bit test key; tests that need another key use key files.
TEST_KEY_HEX = "5ec7e5" + "a1" * 29
_PREFECT_HOME = tempfile.mkdtemp(prefix="hcr-test-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)

os.environ.update(
    {
        "OMP_NUM_THREADS": "1",
        "HCR_KEY": TEST_KEY_HEX,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "PREFECT_HOME": _PREFECT_HOME,
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
)
os.environ.pop("HCR_KEY_FILE", None)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
PHOTOS = FIXTURES / "photos"


@pytest.fixture(scope="session")
def photos_dir() -> Path:
    """Folder of real test photos (see tests/fixtures/photos/ATTRIBUTION.md)."""
    if not any(PHOTOS.glob("*.jpg")):
        pytest.fail(f"no fixture photos in {PHOTOS}")
    return PHOTOS


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session: 2 CPUs, no dashboard, 256 MiB object store, 127.0.0.1 only."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's test harness: a temporary SQLite database and API server on 127.0.0.1."""
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        with temporary_settings(updates={"flows.heartbeat_frequency": None}):
            yield


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """URL of a moto S3 server on 127.0.0.1 with a free port."""
    from moto.server import ThreadedMotoServer

    # moto logs every request at INFO through werkzeug.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint) -> str:
    """A fresh, empty bucket on the moto server; returns its name."""
    import boto3

    name = f"hcr-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name
