"""Local Ray start-up retries (flows.runtime._start_local_ray)."""

import pytest
import ray

from flows import runtime
from schemas.config import RayOptions

TIMEOUT = Exception("The current node timed out during startup. This could happen because ...")


def _fake_init(failures: list[Exception], calls: list[dict]):
    def init(**kwargs):
        calls.append(kwargs)
        if failures:
            raise failures.pop(0)

    return init


# NOTE: ray.init is replaced here because a raylet that misses Ray's fixed 30 s
# registration window cannot be produced on demand.
def test_start_retries_a_startup_timeout(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", _fake_init([TIMEOUT], calls))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    runtime._start_local_ray(RayOptions())
    assert len(calls) == 2
    assert calls[0]["address"] == "local"
    assert calls[0]["include_dashboard"] is False


def test_start_gives_up_after_the_last_attempt(monkeypatch):
    calls: list[dict] = []
    failures = [TIMEOUT] * runtime.LOCAL_RAY_START_ATTEMPTS
    monkeypatch.setattr(ray, "init", _fake_init(failures, calls))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(Exception, match="timed out during startup"):
        runtime._start_local_ray(RayOptions())
    assert len(calls) == runtime.LOCAL_RAY_START_ATTEMPTS


def test_start_raises_other_errors_at_once(monkeypatch):
    calls: list[dict] = []
    monkeypatch.setattr(ray, "init", _fake_init([ValueError("object_store_memory too small")], calls))
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(ValueError, match="too small"):
        runtime._start_local_ray(RayOptions())
    assert len(calls) == 1
