"""Start-up order: seconds until the Prefect server, a local Ray and one protect actor are all up.

Each run starts a fresh Python process that brings up the three in one of
two orders. `server-first` is what `flows.runtime.head_start` does: launch
the temporary Prefect server, then start Ray and the actor while it imports.
`ray-first` starts Ray, then the server while the actor loads its models.
Runs alternate between the orders, so a drift of the machine's speed weighs
on both alike.

Usage: python scripts/bench_startup.py [--runs 2]
"""

import argparse
import os
import subprocess
import sys
import time

ORDERS = ("ray-first", "server-first")


def bring_up(order: str) -> float:
    """Bring up the server, Ray and one protect actor in `order`; return the seconds until all are up."""
    start = time.perf_counter()
    from actors import pool
    from flows.prefect_server import TemporaryServer
    from flows.runtime import prepare_environment, ray_session
    from schemas.config import ModelOptions, PrefectOptions, RayOptions

    options = RayOptions()
    prepare_environment(options, PrefectOptions())
    server = TemporaryServer()
    if order == "server-first":
        server.start()
    with ray_session(options) as local:
        if order == "ray-first":
            server.start()
        pool.prestart_protect_pool(options, ModelOptions(), local)
        ready = pool.start_protect_pool(options, ModelOptions(), local)
        server.wait_ready(90)
        seconds = time.perf_counter() - start
        ready.shutdown()
        server.stop()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="runs of each order (default: 2)")
    parser.add_argument("--order", choices=ORDERS, help=argparse.SUPPRESS)  # one run in this process
    args = parser.parse_args(argv)

    if args.order:
        print(f"{bring_up(args.order):.1f}")
        return 0

    env = dict(os.environ)
    env.setdefault("HCR_KEY", "00112233445566778899aabbccddeeff")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    results: dict[str, list[float]] = {order: [] for order in ORDERS}
    for _ in range(args.runs):
        for order in ORDERS:
            done = subprocess.run(
                [sys.executable, __file__, "--order", order], env=env, capture_output=True, text=True, check=True
            )
            results[order].append(float(done.stdout.strip().splitlines()[-1]))
    for order, seconds in results.items():
        print(f"{order}: all up after {', '.join(f'{value:.1f}' for value in seconds)} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
