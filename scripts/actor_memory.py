"""Audit shards through one Ray actor and print the actor's own memory figures after each.

The soak run (scripts/soak_pipeline.py) shows a worker's RSS from outside.
This script shows what the RSS is made of. After each 256-image shard the
actor reports its anonymous RSS and glibc's heap statistics (`mallinfo2`:
heap size, bytes in use, free bytes kept in the arenas). It also reports its
Python object count and its thread count. A heap that grows while the bytes
in use stay the same is fragmentation, not a leak.

Usage, on the folders of a soak run:
    python scripts/soak_pipeline.py --images 20000 --num-actors 2 --workdir /tmp/hcr-soak-20k
    python scripts/actor_memory.py --source /tmp/hcr-soak-20k/edited --registry /tmp/hcr-soak-20k/store [--shards 8]

Prints one JSON line per shard. Figures in MB.
"""

import argparse
import ctypes
import datetime
import gc
import json
import os
import tempfile
import time

from actors.audit_actor import AuditWorker

SHARD_SIZE = 256


class MeasuredAuditWorker(AuditWorker):
    """The audit worker with a method that reports its process's memory."""

    def memory(self) -> dict:
        import threading

        # Defined here: Ray pickles the class, and ctypes structures do not pickle.
        names = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
        fields = [(name, ctypes.c_size_t) for name in names]

        class MallInfo2(ctypes.Structure):
            _fields_ = fields

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        heap = libc.mallinfo2()
        with open("/proc/self/status") as handle:
            status = dict(line.split(":", 1) for line in handle)
        return {
            "rss_anon_mb": int(status["RssAnon"].split()[0]) // 1024,
            "heap_mb": heap.arena >> 20,  # all arenas, from brk and mmap
            "heap_in_use_mb": heap.uordblks >> 20,
            "heap_free_mb": heap.fordblks >> 20,
            "large_mmap_mb": heap.hblkhd >> 20,
            "python_objects": len(gc.get_objects()),
            "threads": int(status["Threads"]),
            "python_threads": threading.active_count(),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="folder of images to audit (a soak run's edited copies)")
    parser.add_argument("--registry", required=True, help="registry destination of their protect run")
    parser.add_argument("--shards", type=int, default=8, help=f"shards of {SHARD_SIZE} images to run (default: 8)")
    args = parser.parse_args(argv)

    os.environ.setdefault("HCR_KEY", "00112233445566778899aabbccddeeff")
    import ray

    from flows import paths
    from flows.listing import list_archive
    from flows.runtime import prepare_environment, ray_session
    from flows.shard import ShardSpec
    from schemas.config import ModelOptions, PrefectOptions, RayOptions, StorageOptions

    options = RayOptions(num_actors=1)
    prepare_environment(options, PrefectOptions())
    entries = sorted(list_archive(args.source, StorageOptions()), key=lambda entry: entry.image_id)
    rounds = max(1, len(entries) // SHARD_SIZE)
    day = datetime.date.today()
    with tempfile.TemporaryDirectory(prefix="hcr-actor-memory-") as dest, ray_session(options):
        actor = ray.remote(MeasuredAuditWorker).options(num_cpus=1).remote(ModelOptions(), args.registry, StorageOptions())
        print(json.dumps({"shard": None, **ray.get(actor.memory.remote())}), flush=True)
        for shard in range(args.shards):
            first = (shard % rounds) * SHARD_SIZE
            spec = ShardSpec(
                kind="audit", run_id="memory", archive="memory", sweep_date=day, shard=shard,
                entries=entries[first : first + SHARD_SIZE], source=args.source, dest=dest,
                part_url=paths.verdict_part(dest, day, "memory", "memory", shard),
                done_url=paths.done_marker(paths.sweep_state(dest, "memory"), shard),
            )
            start = time.perf_counter()
            ray.get(actor.run_shard.remote(spec))
            seconds = round(time.perf_counter() - start, 1)
            print(json.dumps({"shard": shard, "seconds": seconds, **ray.get(actor.memory.remote())}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
