"""Typed run configuration for `hcr protect` and `hcr audit`.

Each field's description gives its unit and is what `hcr ... --help` prints,
so the defaults live here only. The secret key is deliberately absent: actors
read it from their own environment or key file, never from a config that
Prefect records as a flow parameter.
"""

from pydantic import BaseModel, ConfigDict, Field

from hcr_model.image_io import DEFAULT_MAX_PIXELS


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StorageOptions(_Options):
    """Object storage access: the S3 endpoint and retries."""

    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint URL for s3:// paths, e.g. http://127.0.0.1:9000; "
        "credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the AWS config",
    )
    retries: int = Field(default=5, ge=1, description="attempts per storage call on transient errors (count)")
    retry_backoff_s: float = Field(
        default=0.5, gt=0, description="wait before the first retry, doubled after each failed attempt (seconds)"
    )


class RayOptions(_Options):
    """Ray cluster and actor pool settings; each actor keeps one copy of the models."""

    address: str | None = Field(
        default=None,
        description="Ray cluster address (auto, or ray://HOST:10001); default: start a local Ray bound to 127.0.0.1",
    )
    num_actors: int = Field(default=1, ge=1, description="model actors, each holding one copy of the models (count)")
    batch_size: int = Field(default=8, ge=1, description="images per model batch inside an actor (count)")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="CPUs reserved per actor (count)")
    gpus_per_actor: float | None = Field(
        default=None,
        ge=0,
        description="GPUs reserved per actor; default: 1 (shared when actors outnumber GPUs) if the cluster has a GPU, else 0",
    )
    num_cpus: int | None = Field(default=None, ge=1, description="CPUs of a local Ray (count); default: all; ignored with an address")
    object_store_mb: int = Field(
        default=256, ge=64, description="object store of a local Ray (MiB); ignored with an address"
    )


class PrefectOptions(_Options):
    """The Prefect API the flow runs report to."""

    api_url: str | None = Field(
        default=None,
        description="Prefect API URL, e.g. http://127.0.0.1:4200/api; default: a temporary local server for this run",
    )


class ModelOptions(_Options):
    """Weights version, device and key file of the actors."""

    version: str = Field(default="v1", description="weights version shipped in hcr_model/weights/")
    device: str | None = Field(
        default=None, description="torch device for the actors (cpu, cuda); default: cuda when the actor got a GPU, else cpu"
    )
    key_file: str | None = Field(
        default=None,
        description="path of the key file as the actors see it; overrides HCR_KEY and HCR_KEY_FILE in the actors' "
        "environment (default: the actors' own HCR_KEY, HCR_KEY_FILE or ~/.config/hcr/key)",
    )
    crop_search: bool = Field(
        default=True,
        description="audit only: search an image that reads as unmarked for a crop of a protected image; costs 0.6-0.8 s "
        "per unmarked image on one CPU thread, so archives with many unprotected images may turn it off (true/false)",
    )


class LimitOptions(_Options):
    """Guards and warning thresholds of a run."""

    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS,
        ge=1,
        description="largest decoded image accepted (pixels); larger ones become error rows (decompression-bomb guard)",
    )
    max_file_mb: int = Field(
        default=512, ge=1, description="largest file or archive member read (MiB); larger ones become error rows"
    )
    key_mismatch_fraction: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="share of a shard's images whose payload MAC fails above which a key-mismatch warning is logged",
    )


class PlanOptions(_Options):
    """Sharding of the archive."""

    shard_size: int = Field(default=256, ge=1, description="images per shard (count)")


class RunOptions(_Options):
    """Settings shared by protect and audit."""

    plan: PlanOptions = Field(default_factory=PlanOptions)
    storage: StorageOptions = Field(default_factory=StorageOptions)
    ray: RayOptions = Field(default_factory=RayOptions)
    prefect: PrefectOptions = Field(default_factory=PrefectOptions)
    model: ModelOptions = Field(default_factory=ModelOptions)
    limits: LimitOptions = Field(default_factory=LimitOptions)
    progress: bool = Field(default=True, description="show a progress bar over shards")


class ProtectConfig(RunOptions):
    """`hcr protect SRC DEST`: watermark every image and write the registry."""

    source: str = Field(description="archive URL: a folder, s3://bucket/prefix, memory://..., with images, tar and zip files")
    dest: str = Field(description="destination URL for protected images and the registry")
    archive: str | None = Field(default=None, description="archive name; default: the last path component of SRC")
    labels: str | None = Field(
        default=None,
        description="sidecar file (CSV, JSON or Parquet) with an image_id column, an optional label column "
        "and any other columns (stored as JSON metadata)",
    )
    jpeg_quality: int = Field(default=95, ge=1, le=100, description="JPEG quality of protected JPEG images (1-100)")


class AuditConfig(RunOptions):
    """`hcr audit SRC DEST`: give every image a verdict and write the results."""

    source: str = Field(description="archive URL: a folder, s3://bucket/prefix, memory://..., with images, tar and zip files")
    dest: str = Field(description="destination URL for verdicts, masks, restored crops and sweep state")
    registry: str | None = Field(
        default=None,
        description="protect destination whose registry/ partitions are searched (all archives); default: no retrieval",
    )
    archive: str | None = Field(default=None, description="archive name; default: the last path component of SRC")
    sweep_id: str | None = Field(
        default=None, description="sweep id; default: ARCHIVE-YYYYMMDD (UTC), so a rerun on the same day resumes"
    )

