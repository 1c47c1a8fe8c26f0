"""A temporary Prefect API server on 127.0.0.1, for runs that have no Prefect API URL.

Prefect starts the same server itself at a run's first flow when no API URL
is set: uvicorn serving `prefect.server.api.server:create_app` in a
subprocess, with the UI off (`SubprocessASGIServer` in Prefect 3). Starting
it from here has two gains. The driver never imports Prefect's server code,
which takes about 9 s of CPU on a 2-core machine while holding the GIL that
Ray's start-up needs. And the server comes up in its own process while Ray
and the actors start.

NOTE: like Prefect's own temporary server, the subprocess outlives a driver
that is killed with SIGKILL alone (not its process group).
"""

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time

logger = logging.getLogger(__name__)

# Environment of the server process, as Prefect sets it for its own
# temporary server: no UI, and the ephemeral-server behaviour. Analytics are
# off unless the user's settings turn them on: the server would otherwise
# send telemetry to a host outside this machine.
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
# CPU priority of the server process, as `nice` counts: higher is lower.
SERVER_NICENESS = 10
# Ports tried before giving up when another process takes the chosen one.
START_ATTEMPTS = 3


def _free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """One Prefect API server subprocess: `start()`, then `wait_ready()`, and `stop()` at the end."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Launch the server process and return at once."""
        from prefect.settings import get_current_settings

        self.port = _free_port()
        env = {**os.environ, **SERVER_ENV, **get_current_settings().to_environment_variables(exclude_unset=True)}
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on",
        ]
        self.process = subprocess.Popen(command, env=env)
        # Lower the server's CPU priority (nice 10) while it imports Prefect's
        # server code, so that on a small machine Ray and the actors, which
        # the first shard waits for, come up first. On a machine with idle
        # cores this changes nothing. The child has started no thread yet,
        # so all its threads inherit this priority.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.process.pid, SERVER_NICENESS)

    def wait_ready(self, timeout_s: float) -> None:
        """Wait until the server passes its health check, relaunching it on another port if it exits early."""
        import httpx

        deadline = time.monotonic() + timeout_s
        attempts = 1
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    if attempts >= START_ATTEMPTS:
                        break
                    logger.warning("the temporary Prefect server exited with code %s, starting it again", self.process.returncode)
                    attempts += 1
                    self.start()
                try:
                    if client.get(f"{self.api_url}/health", timeout=2.0).status_code == 200:
                        logger.info("started a temporary Prefect server on %s", self.api_url)
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        exited = self.process is not None and self.process.poll() is not None
        reason = f"exited with code {self.process.returncode}" if exited else f"did not answer within {timeout_s:.0f} s"
        self.stop()
        raise RuntimeError(
            f"the temporary Prefect server on {self.api_url} {reason}. Raise "
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or pass --prefect-api-url of a running Prefect server"
        )

    def stop(self) -> None:
        """Terminate the server process, killing it when it does not exit within 5 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
