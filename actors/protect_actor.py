"""The protect worker: keeps the loaded models and protects whole shards.

`ProtectWorker` is a plain class, so it runs in tests and in a single process;
`actors.pool` wraps it as a Ray actor. It loads the models once, reads the
key from its own environment or key file, and for each image writes the
protected copy (same relative path and format) and one registry row.
"""

import datetime
import logging

import pyarrow as pa

from actors.runtime import WorkerInfo, load_models, run_batch
from flows import paths, storage
from flows.prefetch import OrderedWriter, prefetched
from flows.reader import FailedImage, LoadedImage, iter_batches
from flows.shard import ShardSpec, ShardStats
from hcr_model.image_io import encode_image
from schemas.arrow import rows_to_table
from schemas.config import ModelOptions
from schemas.rows import REGISTRY_FILE_SCHEMA, RegistryRow

logger = logging.getLogger(__name__)


class ProtectWorker(WorkerInfo):
    """Protect shards with one loaded copy of the models."""

    def __init__(self, model: ModelOptions):
        from hcr_model.engine import Protector

        bundle, key, device = load_models(model)
        self._init_info(key.key_id, bundle.version, device)
        self.protector = Protector(bundle, key)

    def _process(self, spec: ShardSpec) -> tuple[pa.Table, ShardStats]:
        fs, _ = storage.open_url(spec.dest, spec.storage)
        writer: OrderedWriter[RegistryRow] = OrderedWriter()
        errors: list[tuple[str, str]] = []

        # The next batch is decoded and the protected images encoded and
        # written in helper threads while the models run.
        for batch in prefetched(iter_batches(spec, spec.batch_size)):
            loaded = [item for item in batch if isinstance(item, LoadedImage)]
            for item in batch:
                if isinstance(item, FailedImage):
                    errors.append((item.entry.image_id, item.error))
                    logger.warning("protect: %s", item.error)
            outputs = run_batch(self.protector.protect_batch, [_engine_input(item) for item in loaded], "protect")
            for item, output in zip(loaded, outputs, strict=True):
                if isinstance(output, Exception):
                    errors.append((item.entry.image_id, f"model failed on {item.entry.image_id}: {type(output).__name__}: {output}"))
                    continue
                writer.submit(self._write_protected, spec, fs, item, output)

        rows = writer.results()

        stats = ShardStats(
            shard=spec.shard,
            images=len(spec.entries),
            rows=len(rows),
            counts={name: count for name, count in (("protected", len(rows)), ("error", len(errors))) if count},
            errors=errors,
            key_id=self.key_id,
            model_version=self.model_version,
        )
        return rows_to_table(rows, REGISTRY_FILE_SCHEMA), stats

    def _write_protected(self, spec: ShardSpec, fs, item: LoadedImage, output) -> RegistryRow:
        decoded = item.image
        encoded = encode_image(
            output.protected_rgb,
            decoded.alpha,
            decoded.format,
            jpeg_quality=spec.jpeg_quality,
            icc_profile=decoded.icc_profile,
            exif=decoded.exif,
        )
        target = paths.protected_path(spec.dest, spec.archive, item.entry.image_id + (encoded.extension or ""))
        _, target_path = storage.open_url(target, spec.storage)
        storage.write_bytes(fs, target_path, encoded.data, spec.storage)
        notes = output.notes + encoded.notes

        label, metadata = spec.labels.get(item.entry.image_id, (None, None))
        return RegistryRow(
            archive=spec.archive,
            image_id=item.entry.image_id,
            source_uri=item.entry.source_uri,
            sha256=item.sha256,
            protected_uri=storage.to_url(fs, target_path),
            hidden_code=output.hidden_code,
            code_bits=output.code_bits,
            code_embedding=output.code_embedding.astype("float32").tolist(),
            label=label,
            metadata=metadata,
            key_id=self.key_id,
            model_version=self.model_version,
            protected_at=datetime.datetime.now(datetime.UTC),
            notes="; ".join(notes) or None,
        )


def _engine_input(item: LoadedImage):
    from hcr_model.engine import ImageInput

    return ImageInput(image_id=item.entry.image_id, rgb=item.image.rgb, alpha=item.image.alpha, notes=list(item.image.notes))
