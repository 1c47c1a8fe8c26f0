"""No secret in any output: logs, Parquet columns, markers, manifests, summaries or Prefect's database.

`hcr protect` and `hcr audit` run in a child process with its own Ray, its
own temporary Prefect server and hcr's loggers at DEBUG. The session's Ray
workers were started with the shared test key and credentials, and a
worker's environment cannot change afterwards. Storage is the session's moto
S3 server on 127.0.0.1.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"
REPO = Path(__file__).resolve().parents[2]
KEY_HEX = "d1571ac7" * 8  # 256 bits
ACCESS_KEY_ID = "HCRSECRETSTESTKEYID1"
SECRET_ACCESS_KEY = "hcrSecretAccessKey/do-not-log+7f3a9c"
INPUTS = ("photo.webp", "rgba.png", "truncated.jpg")

# Runs in the child: one local Ray for both commands, then the hcr CLI twice.
DRIVER = """
import sys
import ray
from flows.cli import main

ray_dir, endpoint, bucket = sys.argv[1:4]
# logging_config sets the root logger of the driver and of every worker, so the actors' DEBUG lines are emitted too.
ray.init(address="local", num_cpus=1, include_dashboard=False, object_store_memory=128 * 2**20,
         logging_level="WARNING", logging_config=ray.LoggingConfig(log_level="DEBUG"), _temp_dir=ray_dir)
common = ["--s3-endpoint-url", endpoint, "--num-actors", "1", "--no-progress"]
protect = main(["--log-level", "DEBUG", "protect", f"s3://{bucket}/src/photos", "--out", f"s3://{bucket}/prot", *common])
audit = main(["--log-level", "DEBUG", "audit", f"s3://{bucket}/src/photos", "--out", f"s3://{bucket}/audit",
              "--registry", f"s3://{bucket}/prot", "--sweep-id", "secrets-sweep", *common])
ray.shutdown()
print(f"exit statuses: protect {protect}, audit {audit}")
sys.exit(protect or audit)
"""

pytestmark = pytest.mark.timeout(600)


def _needles() -> dict[str, bytes]:
    key = bytes.fromhex(KEY_HEX)
    return {
        "HCR_KEY hex": KEY_HEX.encode(),
        "HCR_KEY hex, upper case": KEY_HEX.upper().encode(),
        "HCR_KEY bytes": key,
        "secret access key": SECRET_ACCESS_KEY.encode(),
    }


def _leaks(data: bytes, where: str) -> list[str]:
    return [f"{name} in {where}" for name, needle in _needles().items() if needle in data]


def _cell_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return repr(value).encode()


def _parquet_leaks(table: pa.Table, where: str) -> list[str]:
    """Check every cell of every column, decompressed, plus the schema metadata."""
    leaks = []
    for name in table.column_names:
        for value in table.column(name).to_pylist():
            leaks += _leaks(_cell_bytes(value), f"{where} column {name}")
    for meta_key, meta_value in (table.schema.metadata or {}).items():
        leaks += _leaks(meta_key + meta_value, f"{where} schema metadata")
    return leaks


@pytest.fixture(scope="module")
def secret_run(s3_endpoint, tmp_path_factory):
    """Protect and audit a few images with a distinctive key and credentials; return what they left behind."""
    import boto3

    bucket = "hcr-secrets"
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    for name in INPUTS:
        s3.put_object(Bucket=bucket, Key=f"src/photos/{name}", Body=(CORPUS / name).read_bytes())

    root = tmp_path_factory.mktemp("secrets")
    # Ray's socket paths must stay under 107 bytes, so its folder gets a short name.
    ray_dir = tempfile.mkdtemp(prefix="hcr-ray-")
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_API", "HCR_KEY"))}
    env.update(
        HCR_KEY=KEY_HEX,
        AWS_ACCESS_KEY_ID=ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
        PREFECT_HOME=str(root / "prefect"),
        PREFECT_LOGGING_LEVEL="DEBUG",
        HOME=str(root / "home"),
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", DRIVER, ray_dir, s3_endpoint, bucket],
            cwd=REPO, env=env, capture_output=True, timeout=540, check=False,
        )
        files = {path: path.read_bytes() for path in Path(ray_dir).rglob("*") if path.is_file()}
        for folder in (root / "prefect", root / "home"):
            files.update({path: path.read_bytes() for path in folder.rglob("*") if path.is_file()})
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)

    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return {"result": result, "files": files, "objects": objects}


def test_run_succeeds(secret_run):
    result = secret_run["result"]
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-4000:]
    assert b"exit statuses: protect 0, audit 0" in result.stdout


def test_outputs_were_written(secret_run):
    keys = secret_run["objects"]
    assert any(key.startswith("prot/registry/") for key in keys)
    assert any(key.startswith("audit/verdicts/") for key in keys)
    assert any(key.endswith(".done") for key in keys)
    assert any(key.endswith("manifest.parquet") for key in keys)


def test_logs_capture_the_run(secret_run):
    # The leak checks below mean something only if the logs were captured, the actors' included.
    output = secret_run["result"].stdout + secret_run["result"].stderr
    assert b"key_id" in output
    assert b"worker loaded weights" in output, "the actors' INFO lines were not captured"
    assert any(path.suffix in (".out", ".err", ".log") for path in secret_run["files"])


def test_console_output_has_no_secret(secret_run):
    result = secret_run["result"]
    assert _leaks(result.stdout, "stdout") + _leaks(result.stderr, "stderr") == []


def test_ray_and_prefect_files_have_no_secret(secret_run):
    leaks = []
    for path, data in secret_run["files"].items():
        leaks += _leaks(data, str(path))
    assert leaks == []


def test_stored_objects_have_no_secret(secret_run):
    leaks = []
    for key, data in secret_run["objects"].items():
        leaks += _leaks(data, key)
        if key.endswith(".parquet"):
            leaks += _parquet_leaks(pq.read_table(pa.BufferReader(data)), key)
    assert leaks == []


def test_rows_carry_only_the_fingerprint(secret_run):
    from hcr_model.keys import SecretKey

    key_id = SecretKey.from_hex(KEY_HEX).key_id
    verdicts = [data for key, data in secret_run["objects"].items() if key.startswith("audit/verdicts/")]
    rows = [row for data in verdicts for row in pq.read_table(pa.BufferReader(data)).to_pylist()]
    assert len(rows) == len(INPUTS)
    assert {row["key_id"] for row in rows} == {key_id}
