"""``modelpilot monitor``: run the monitor service until SIGTERM.

Shutdown order matters for the durability promise: stop accepting connections, let in-flight
requests finish (they wait for their commit), write whatever is still queued, then close the
database. Kubernetes sends SIGTERM and waits ``terminationGracePeriodSeconds`` for that.

A model entry the monitor cannot serve is skipped (logged, and listed in ``/v1/status``); only a
config document that is not a config at all stops the process (exit 2). ``--revisions`` names the
runtime revisions file, which is re-read every evaluation, so a promotion needs no restart.

``--auth`` picks how callers are authenticated (see :mod:`.auth`): ``tokenreview`` (in a
cluster: projected ServiceAccount tokens for ``--audience``), ``static`` (``--tokens-file``, for
standalone runs) or ``none`` (no authentication at all; logged as a warning). ``--access`` names
the roles document; with ``tokenreview`` or ``static`` an identity it does not name may do nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import prometheus_client
from aiohttp import web

from modelpilot.api.spec import parse_duration

from .api import MonitorService, create_app, runner_options
from .auth import (
    AUDIENCE,
    AccessPolicy,
    AuthConfigError,
    PolicyAuthorizer,
    StaticVerifier,
    TokenReviewVerifier,
    Verifier,
    in_cluster_review,
)
from .config import DEFAULT_PORT, ConfigError, MonitorConfig, load_config
from .references import DEFAULT_REFERENCE_DIR

log = logging.getLogger("modelpilot.monitor")

SHUTDOWN_TIMEOUT = 20.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelpilot monitor", description="Run the model monitor service.")
    parser.add_argument("--config", required=True, help="monitor config file (YAML or JSON)")
    parser.add_argument("--db", required=True, help="SQLite database path (on a persistent volume)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--evaluate-every", default="15s", help="evaluation interval, e.g. 15s or 1m")
    parser.add_argument(
        "--reference-dir", default=DEFAULT_REFERENCE_DIR, help="where reference ConfigMaps are mounted"
    )
    parser.add_argument(
        "--revisions",
        help="runtime stable/candidate revisions file (re-read every evaluation; may be absent)",
    )
    parser.add_argument(
        "--auth",
        choices=["tokenreview", "static", "none"],
        default="none",
        help="caller authentication: tokenreview (in a cluster), static (--tokens-file) or none "
        "(no authentication; default for now, logged as a warning)",
    )
    parser.add_argument("--tokens-file", help="static tokens (YAML: tokens: [{token, username, groups}])")
    parser.add_argument("--access", help="access document: who may write, feed labels, review and read")
    parser.add_argument("--audience", default=AUDIENCE, help=f"token audience (default {AUDIENCE})")
    parser.add_argument(
        "--open-metrics",
        action="store_true",
        help="serve /metrics without a token (aggregates only; for a Prometheus that sends none)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser


async def serve(
    config: MonitorConfig,
    db: str | Path,
    *,
    host: str,
    port: int,
    evaluate_every: float,
    reference_dir: str | Path = DEFAULT_REFERENCE_DIR,
    revisions: str | Path | None = None,
    stop: asyncio.Event | None = None,
    verifier: Verifier | None = None,
    policy: AccessPolicy | None = None,
    open_metrics: bool = False,
) -> None:
    """Serve until ``stop`` is set (by SIGTERM/SIGINT when not given)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    auth: dict[str, Any] = {}
    if verifier is not None:
        auth = {
            "verifier": verifier,
            "authorize": PolicyAuthorizer(policy or AccessPolicy()),
            "open_metrics": open_metrics,
        }
    service = MonitorService(
        config,
        db,
        reference_dir=reference_dir,
        evaluate_every=evaluate_every,
        revisions_path=revisions,
        **auth,
    )
    runner = web.AppRunner(
        create_app(service), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT, **runner_options(config)
    )
    await runner.setup()
    try:
        await service.start()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("monitor listening on %s:%d with %d models, database %s", host, port, len(config.models), db)
        await stop.wait()
        log.info("monitor shutting down")
    finally:
        await runner.cleanup()
        await service.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def auth_from_args(args: argparse.Namespace) -> tuple[Verifier | None, AccessPolicy | None]:
    policy = AccessPolicy.from_file(args.access) if args.access else AccessPolicy()
    if args.auth == "none":
        log.warning("monitor: --auth=none: every endpoint is open to anyone who can reach it")
        return None, None
    if args.auth == "static":
        if not args.tokens_file:
            raise AuthConfigError("--auth=static needs --tokens-file")
        return StaticVerifier.from_file(args.tokens_file), policy
    return TokenReviewVerifier(in_cluster_review(), audience=args.audience), policy


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prometheus_client.disable_created_metrics()  # *_created series only add noise to every scrape
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(args.config)
        evaluate_every = parse_duration(args.evaluate_every)
        if not evaluate_every or evaluate_every <= 0:
            raise ConfigError("--evaluate-every must be positive")
        verifier, policy = auth_from_args(args)
    except (ConfigError, AuthConfigError, ValueError, OSError) as error:
        print(f"modelpilot monitor: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve(
                config,
                args.db,
                host=args.host,
                port=args.port,
                evaluate_every=evaluate_every,
                reference_dir=args.reference_dir,
                revisions=args.revisions,
                verifier=verifier,
                policy=policy,
                open_metrics=args.open_metrics,
            )
        )
    except (OSError, sqlite3.Error) as error:
        log.error("monitor failed: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
