"""Local Ray start-up retries and the head start of Ray, Prefect and the actors (flows.runtime)."""

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


def test_head_start_keeps_initialized_ray(ray_local, prefect_harness):
    calls = []
    with runtime.head_start(RayOptions(), calls.append):
        assert calls == [True]
    assert ray_local.is_initialized()


def test_head_start_skips_server_with_api_url(ray_local, prefect_harness, monkeypatch):
    from flows.prefect_server import TemporaryServer

    # The harness sets PREFECT_API_URL to its own server, so none may start.
    started = []
    monkeypatch.setattr(TemporaryServer, "start", lambda self: started.append(self))
    with runtime.head_start(RayOptions(), lambda local: None):
        pass
    assert started == []


def test_server_launched_before_ray(ray_local, monkeypatch):
    from prefect.settings import temporary_settings

    from flows.prefect_server import TemporaryServer

    # The server process itself is not started here: the order of the steps is what is checked.
    steps = []
    monkeypatch.setattr(TemporaryServer, "start", lambda self: steps.append("server launched"))
    monkeypatch.setattr(TemporaryServer, "wait_ready", lambda self, timeout_s: steps.append("server ready"))
    real_session = runtime.ray_session

    def recording_session(options):
        steps.append("ray")
        return real_session(options)

    monkeypatch.setattr(runtime, "ray_session", recording_session)
    with (
        temporary_settings(updates={"api.url": None}),
        runtime.head_start(RayOptions(), lambda local: steps.append(f"actors local={local}")),
    ):
        steps.append("flow")
    assert steps == ["server launched", "ray", "actors local=True", "server ready", "flow"]
