"""Pieces every trainer shares: device and autocast, checkpoint and resume, wall budget, loss logging."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure root logging for a CLI entry point (time, level, logger name)."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def select_device(requested: str | None = None) -> torch.device:
    """Return the requested device, else the first GPU when present, else the CPU."""
    if requested:
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Return a bf16 autocast context on a GPU and a no-op context on the CPU.

    CPU bf16 is slower than fp32 on CPUs without AMX, so the CPU trains in fp32.
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def configure_threads(threads: int) -> None:
    """Limit torch's intra-op threads (the shared training machine has 2 cores)."""
    if threads > 0:
        torch.set_num_threads(threads)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cosine_lr(base_lr: float, progress: float, warmup: float = 0.03, floor: float = 0.05) -> float:
    """Return the learning rate at ``progress`` in [0, 1]: linear warmup, then cosine down to ``floor``·base."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < warmup:
        return base_lr * max(progress / warmup, 0.01)
    t = (progress - warmup) / max(1.0 - warmup, 1e-8)
    return base_lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


class Checkpointer:
    """Saves and restores training state in ``out_dir/last.pt``.

    Writes go to a temporary file that is then renamed, so an interrupted
    save never leaves a truncated checkpoint behind.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.out_dir / CHECKPOINT_NAME

    def exists(self) -> bool:
        return self.path.is_file()

    def save(self, state: dict[str, Any]) -> Path:
        state = dict(state)
        state["rng"] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
        }
        tmp = self.path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)
        return self.path

    def load(self, restore_rng: bool = True) -> dict[str, Any] | None:
        """Return the saved state, or None when no checkpoint exists yet."""
        if not self.exists():
            return None
        # The checkpoint contains optimizer state and RNG tuples, so weights_only loading would reject it.
        state = torch.load(self.path, map_location="cpu", weights_only=False)
        if restore_rng and "rng" in state:
            random.setstate(state["rng"]["python"])
            np.random.set_state(state["rng"]["numpy"])
            torch.set_rng_state(state["rng"]["torch"])
        logger.info("resumed from %s (step %s)", self.path, state.get("step"))
        return state


class WallBudget:
    """Training time budget that survives restarts: seconds already spent plus this run's clock."""

    def __init__(self, minutes: float, spent_seconds: float = 0.0) -> None:
        self.total = minutes * 60.0
        self.spent_before = spent_seconds
        self.start = time.monotonic()

    @property
    def spent(self) -> float:
        return self.spent_before + time.monotonic() - self.start

    @property
    def progress(self) -> float:
        return min(self.spent / self.total, 1.0) if self.total > 0 else 1.0

    def exhausted(self) -> bool:
        return self.spent >= self.total


def resume_optimizer(
    state: dict[str, Any] | None,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    minutes: float,
    setup_started: float,
) -> tuple[int, WallBudget]:
    """Restore the optimizer and sampling generator from a checkpoint state and return (step, budget).

    A first run (`state` None) starts at step 0 and counts its setup since
    `setup_started` (a `time.monotonic()` reading, data caching included)
    against the budget. A resumed run counts the seconds its checkpoint
    recorded instead.
    """
    if state is None:
        return 0, WallBudget(minutes, spent_seconds=time.monotonic() - setup_started)
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["step"]), WallBudget(minutes, spent_seconds=float(state["spent_seconds"]))


class MetricLogger:
    """Averages scalar metrics over a logging window; logs them and appends them to ``metrics.jsonl``."""

    def __init__(self, out_dir: str | Path | None, every: int) -> None:
        self.every = every
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.window_start = time.monotonic()
        self.window_items = 0
        self.path = Path(out_dir) / "metrics.jsonl" if out_dir else None

    def add(self, items: int = 0, **metrics: float) -> None:
        self.window_items += items
        for name, value in metrics.items():
            self.sums[name] += float(value)
            self.counts[name] += 1

    def record(self, step: int, **extra: Any) -> None:
        """Append one row (step, extra fields) to metrics.jsonl without averaging."""
        if self.path is not None:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"step": step, "time": time.time(), **extra}) + "\n")

    def flush(self, step: int, budget: WallBudget | None = None, **extra: Any) -> dict[str, float]:
        """Log the window's averages and throughput, write them, and start a new window."""
        elapsed = max(time.monotonic() - self.window_start, 1e-9)
        means = {name: self.sums[name] / max(self.counts[name], 1) for name in self.sums}
        means["items_per_s"] = self.window_items / elapsed
        text = " ".join(f"{k}={v:.4g}" for k, v in means.items())
        if budget is not None:
            remaining = max(budget.total - budget.spent, 0.0)
            text += f" progress={budget.progress:.1%} remaining={remaining / 60:.1f}min"
        logger.info("step %d %s", step, text)
        self.record(step, **means, **extra)

        self.sums.clear()
        self.counts.clear()
        self.window_items = 0
        self.window_start = time.monotonic()
        return means


def export_metadata(step: int, budget: WallBudget, batch_size: int, data: str, device: torch.device, **extra: Any) -> dict[str, Any]:
    """Describe a finished run for its exported weight file: steps, time, samples, data, machine and command."""
    return {
        "steps": step,
        "train_minutes": round(budget.spent / 60, 1),
        "samples_seen": step * batch_size,
        "data": data,
        **extra,
        "machine": f"{platform.machine()} {torch.get_num_threads()} thread(s), {device.type}",
        "command": " ".join(sys.argv),
    }
