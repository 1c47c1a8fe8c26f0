"""The audit worker: keeps the loaded models and the registry index, and audits whole shards.

`AuditWorker` is a plain class; `actors.pool` wraps it as a Ray actor. It
loads the models and the registry once, reads the key from its own
environment or key file, and for each input writes exactly one verdict row,
plus the mask and restored crop of tampered images.
"""

import datetime
import logging
from collections import Counter

import pyarrow as pa

from actors.runtime import WorkerInfo, load_models, run_batch
from flows import paths, storage
from flows.prefetch import OrderedWriter, prefetched
from flows.reader import FailedImage, LoadedImage, iter_batches
from flows.registry import load_registry
from flows.shard import ShardSpec, ShardStats
from hcr_model.image_io import encode_png
from schemas.arrow import rows_to_table
from schemas.config import ModelOptions, StorageOptions
from schemas.rows import VERDICT_FILE_SCHEMA, VerdictRow

logger = logging.getLogger(__name__)


class AuditWorker(WorkerInfo):
    """Audit shards with one loaded copy of the models and of the registry index."""

    def __init__(self, model: ModelOptions, registry: str | None = None, registry_storage: StorageOptions | None = None):
        from hcr_model.engine import Auditor

        bundle, key, device = load_models(model)
        self._init_info(key.key_id, bundle.version, device)
        table = load_registry(registry, registry_storage or StorageOptions()) if registry else None
        self.auditor = Auditor(bundle, key, table, crop_search=model.crop_search)

    def _process(self, spec: ShardSpec) -> tuple[pa.Table, ShardStats]:
        fs, _ = storage.open_url(spec.dest, spec.storage)
        writer: OrderedWriter[VerdictRow] = OrderedWriter()
        errors: list[tuple[str, str]] = []
        mac_failed = 0

        # The next batch is decoded, and masks and crops are encoded and
        # written, in helper threads while the models run.
        for batch in prefetched(iter_batches(spec, spec.batch_size)):
            loaded = [item for item in batch if isinstance(item, LoadedImage)]
            outputs = run_batch(self.auditor.audit_batch, [_engine_input(item) for item in loaded], "audit")
            for item, output in zip(loaded, outputs, strict=True):
                if isinstance(output, Exception):
                    message = f"model failed on {item.entry.image_id}: {type(output).__name__}: {output}"
                    writer.add(self._error_row(spec, FailedImage(item.entry, item.sha256, message)))
                    errors.append((item.entry.image_id, message))
                    continue
                writer.submit(self._verdict_row, spec, fs, item, output)
                mac_failed += bool(output.payload_mac_failed)
            for item in batch:
                if isinstance(item, FailedImage):
                    writer.add(self._error_row(spec, item))
                    errors.append((item.entry.image_id, item.error))

        rows = writer.results()

        stats = ShardStats(
            shard=spec.shard,
            images=len(spec.entries),
            rows=len(rows),
            counts=dict(Counter(row.verdict for row in rows)),
            mac_failed=mac_failed,
            errors=errors,
            key_id=self.key_id,
            model_version=self.model_version,
        )
        return rows_to_table(rows, VERDICT_FILE_SCHEMA), stats

    def _write_png(self, fs, url: str, array, spec: ShardSpec) -> str:
        _, path = storage.open_url(url, spec.storage)
        storage.write_bytes(fs, path, encode_png(array), spec.storage)
        return storage.to_url(fs, path)

    def _verdict_row(self, spec: ShardSpec, fs, item: LoadedImage, output) -> VerdictRow:
        image_id = item.entry.image_id
        mask_uri = restored_uri = None
        if output.mask is not None:
            mask_uri = self._write_png(fs, paths.mask_path(spec.dest, spec.run_id, spec.archive, image_id), output.mask, spec)
        if output.restored_crop is not None:
            restored_uri = self._write_png(
                fs, paths.restored_path(spec.dest, spec.run_id, spec.archive, image_id), output.restored_crop, spec
            )
        height, width = item.image.rgb.shape[:2]
        return VerdictRow(
            **self._identity(spec, item.entry),
            sha256=item.sha256,
            width=width,
            height=height,
            verdict=output.verdict,
            watermark_score=output.watermark_score,
            payload_valid=output.payload_valid,
            bit_confidence=output.bit_confidence,
            tampered_fraction=output.tampered_fraction,
            mask_uri=mask_uri,
            restored_uri=restored_uri,
            restored_bbox=list(output.restored_bbox) if output.restored_bbox is not None else None,
            retrieved_image_id=output.retrieved_image_id,
            retrieved_label=output.retrieved_label,
            retrieval_distance=output.retrieval_distance,
            notes="; ".join(output.notes) or None,
            duration_ms=output.duration_ms,
        )

    def _error_row(self, spec: ShardSpec, item: FailedImage) -> VerdictRow:
        return VerdictRow(
            **self._identity(spec, item.entry),
            sha256=item.sha256,
            width=None,
            height=None,
            verdict="error",
            watermark_score=None,
            payload_valid=False,
            bit_confidence=None,
            tampered_fraction=None,
            error=item.error,
            duration_ms=None,
        )

    def _identity(self, spec: ShardSpec, entry) -> dict:
        return {
            "sweep_id": spec.run_id,
            "sweep_date": spec.sweep_date,
            "archive": spec.archive,
            "shard": spec.shard,
            "image_id": entry.image_id,
            "source_uri": entry.source_uri,
            "key_id": self.key_id,
            "model_version": self.model_version,
            "processed_at": datetime.datetime.now(datetime.UTC),
        }


def _engine_input(item: LoadedImage):
    from hcr_model.engine import ImageInput

    return ImageInput(image_id=item.entry.image_id, rgb=item.image.rgb, alpha=item.image.alpha, notes=list(item.image.notes))
