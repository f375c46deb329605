"""Command line: ``fr-exporter [run] | simulate | sidecar | evaluate | check-config | demo``.

Prometheus-style flags for the exporter (``--web.listen-address``, ``--config.file`` as an alias of
``--config``). Subcommands import their package lazily, so ``check-config`` stays instant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from exporter import __version__
from exporter.config import Config, ConfigError, load_config, parse_listen_address
from exporter.redact import install as install_logging

log = logging.getLogger("exporter.cli")

SUBCOMMANDS = ("run", "simulate", "sidecar", "evaluate", "check-config", "demo")


def _run_until_signal(make: Callable[[asyncio.Event], Coroutine[Any, Any, Any]]) -> int:
    """Run a coroutine that takes a stop event; SIGINT/SIGTERM set the event for a clean stop."""

    async def main() -> Any:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await make(stop)

    try:
        result = asyncio.run(main())
    except KeyboardInterrupt:
        return 130
    return int(result) if isinstance(result, int) else 0


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"fr-exporter: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--config",
        "--config.file",
        dest="config",
        required=required,
        metavar="FILE",
        help="YAML configuration file (environment variables FR_* override it)",
    )
    p.add_argument(
        "--log.level",
        dest="log_level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: the configuration's log_level)",
    )


def cmd_run(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="fr-exporter", description="Funding-rate and liquidation-risk exporter.")
    _config_args(p)
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        metavar="HOST:PORT",
        help="address for /metrics, /api/state, /healthz (default :9466)",
    )
    p.add_argument("--version", action="version", version=f"fr-exporter {__version__}")
    args = p.parse_args(argv)
    config = _load(args.config)
    if args.listen:
        try:
            parse_listen_address(args.listen)
        except ValueError as exc:
            p.error(str(exc))
        config.listen_address = args.listen
    install_logging(args.log_level or config.log_level)
    from exporter.app import run_exporter

    def ready(port: int) -> None:
        host, _ = parse_listen_address(config.listen_address)
        log.info("serving /metrics on %s:%d", host, port)

    return _run_until_signal(lambda stop: run_exporter(config, stop, ready))


def cmd_simulate(argv: Sequence[str]) -> int:
    from exporter.sim import main as sim

    p = argparse.ArgumentParser(
        prog="fr-exporter simulate", description="Serve the four exchanges' public protocols on loopback."
    )
    p.add_argument("--log.level", dest="log_level", default="INFO")
    sim.add_arguments(p)
    args = p.parse_args(argv)
    install_logging(args.log_level)
    return _run_until_signal(lambda stop: sim.run(args, stop))


def cmd_sidecar(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="fr-exporter sidecar", description="AI risk sidecar.")
    _config_args(p)
    args = p.parse_args(argv)
    config = _load(args.config)
    install_logging(args.log_level or config.log_level)
    from exporter.sidecar.main import run_sidecar

    return _run_until_signal(lambda stop: run_sidecar(config, stop))


def cmd_evaluate(argv: Sequence[str]) -> int:
    from exporter.sidecar import main as sidecar

    p = argparse.ArgumentParser(prog="fr-exporter evaluate", description="Score the stored predictions.")
    _config_args(p)
    p.add_argument("--db", dest="db", help="predictions database (default: sidecar.db_path)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = p.parse_args(argv)
    config = _load(args.config)
    install_logging(args.log_level or "WARNING")
    return int(sidecar.evaluate(config, args))


def cmd_check_config(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="fr-exporter check-config", description="Validate a configuration file.")
    p.add_argument("file")
    args = p.parse_args(argv)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"fr-exporter: {exc}", file=sys.stderr)
        return 1
    for issue in config.position_issues:
        print(f"fr-exporter: position skipped: {issue.message}", file=sys.stderr)
    exchanges = ", ".join(
        f"{ex.value} ({len(config.instruments_for(ex))} instruments)" for ex in config.enabled_exchanges()
    )
    if config.position_issues:
        print(
            f"{args.file}: {len(config.position_issues)} invalid position(s); the exporter would skip them",
            file=sys.stderr,
        )
        return 1
    print(f"{args.file}: OK — exchanges: {exchanges or 'none'}; positions: {len(config.positions)}")
    return 0


def cmd_demo(argv: Sequence[str]) -> int:
    from exporter.demo import main as demo_main

    return demo_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    handler = {
        "run": cmd_run,
        "simulate": cmd_simulate,
        "sidecar": cmd_sidecar,
        "evaluate": cmd_evaluate,
        "check-config": cmd_check_config,
        "demo": cmd_demo,
    }[command]
    return handler(rest)


if __name__ == "__main__":
    raise SystemExit(main())
