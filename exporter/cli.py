"""Command line: ``fr-exporter [run] | simulate | sidecar | evaluate | fit-baseline | check-config | demo | top``.

Prometheus-style flags (``--web.listen-address``, ``--web.config.file``, ``--web.telemetry-path``,
``--log.level``, ``--log.format``, ``--config.file`` as an alias of ``--config``). ``run`` is the
default command. Subcommands import their package lazily, so ``check-config`` stays instant. User
errors (bad config, busy port, missing TLS file) are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import logging
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.config import Config, ConfigError, load_config, parse_listen_address, runtime_problems
from exporter.logs import FORMATS, log_level
from exporter.logs import setup as setup_logging

log = logging.getLogger("exporter.cli")

COMMANDS: dict[str, str] = {
    # one line each in `fr-exporter --help` (kept short enough not to wrap at 80 columns)
    "run": "run the exporter (the default command)",
    "simulate": "serve four simulated exchanges on loopback",
    "sidecar": "run the AI risk sidecar",
    "evaluate": "score the sidecar's stored predictions",
    "fit-baseline": "fit the AI baseline's constants",
    "check-config": "validate a configuration file and exit",
    "demo": "simulator + exporter + sidecar, offline",
    "top": "live terminal table of the exporter's state",
    "record": "record raw exchange frames for a while, without serving",
    "replay": "replay a recording: serve it, or write OpenMetrics",
}
EXIT_CONFIG = 2  # unusable configuration
EXIT_LISTEN = 1  # cannot serve (busy port...)


def _fail(message: str, code: int) -> int:
    print(f"fr-exporter: {message}", file=sys.stderr)
    return code


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
        raise SystemExit(EXIT_CONFIG) from None


def _config_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument(
        "--config",
        "--config.file",
        dest="config",
        required=required,
        metavar="FILE",
        help="YAML configuration file (environment variables FR_* override it)",
    )


def _log_args(p: argparse.ArgumentParser, default_level: str | None = None) -> None:
    p.add_argument(
        "--log.level",
        dest="log_level",
        type=log_level,
        default=default_level,
        metavar="LEVEL",
        help="debug, info, warn or error, any case (default: the configuration's log_level)",
    )
    p.add_argument("--log.format", dest="log_format", choices=FORMATS, default="logfmt", help="default: logfmt")


def _web_args(p: argparse.ArgumentParser, default_port: int) -> None:
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        metavar="HOST:PORT",
        help=f"address to serve on (default :{default_port}; a bare :PORT means all interfaces)",
    )
    p.add_argument(
        "--web.config.file",
        dest="web_config",
        metavar="FILE",
        help="exporter-toolkit web config: TLS, client certificates, basic auth (bcrypt)",
    )


# ---- run ---------------------------------------------------------------------------------------


def _reachability(config: Config, timeout: float = 4.0) -> None:
    """One line when no exchange can be reached at all (offline machine, DNS down), instead of only
    per-stream warnings. Runs beside the start-up; the exporter keeps retrying either way."""
    failures: dict[str, str] = {}
    enabled = list(config.enabled_exchanges())
    for ex in enabled:
        url = urllib.parse.urlsplit(config.urls_for(ex)[1])
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            failures[ex.value] = f"DNS lookup of {host} failed"
            continue
        last = "no address"
        for family, kind, proto, _, addr in infos:
            try:
                with socket.socket(family, kind, proto) as s:
                    s.settimeout(timeout)
                    s.connect(addr)
                break
            except OSError as exc:
                last = exc.strerror or type(exc).__name__
        else:
            failures[ex.value] = f"cannot connect to {host}:{port} ({last})"
    if enabled and len(failures) == len(enabled):
        log.error(
            "cannot reach any exchange: %s. Offline or DNS down? The exporter keeps retrying.",
            "; ".join(f"{k}: {v}" for k, v in failures.items()),
        )
    elif failures:
        log.warning("cannot reach %s; the others are reachable", "; ".join(f"{k}: {v}" for k, v in failures.items()))


def banner(config: Config, config_file: str | None, scheme: str) -> str:
    from exporter.build import build_labels
    from exporter.server import all_interfaces

    b = build_labels()
    host, port = parse_listen_address(config.listen_address)
    where = " (all interfaces)" if all_interfaces(host) else ""
    exchanges = ", ".join(
        f"{ex.value} ({len(config.instruments_for(ex))}"
        + (f", all perpetuals up to {c.max_instruments}" if c.all_perpetuals else "")
        + ")"
        for ex, c in config.enabled_exchanges().items()
    )
    return (
        f"fr-exporter {__version__} (revision {b['revision']}, Python {b['python_version']}); "
        f"config {config_file or '(defaults)'}; listening on {scheme}://{host}:{port}{config.telemetry_path}{where}; "
        f"exchanges: {exchanges or 'none'}; positions: {len(config.positions)}"
    )


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.listen:
        try:
            parse_listen_address(args.listen)
        except ValueError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        config.listen_address = args.listen
    if args.web_config:
        config.web_config_file = args.web_config
    if args.shard:
        from exporter.config import ShardConfig
        from exporter.shard import Shard

        try:
            shard = Shard.parse(args.shard)
        except ValueError as exc:
            return _fail(f"--shard: {exc}", EXIT_CONFIG)
        config.shard = ShardConfig(index=shard.index, count=shard.count)
    if args.telemetry_path:
        if not args.telemetry_path.startswith("/"):
            return _fail(f"--web.telemetry-path {args.telemetry_path!r} must start with /", EXIT_CONFIG)
        config.telemetry_path = args.telemetry_path
    setup_logging(args.log_level or config.log_level, args.log_format)
    from exporter.server import ListenError, bind_check, security_for

    try:
        security = security_for(config)  # TLS files and web config checked now, not after start-up
        bind_check(config.listen_address)  # a busy port reported now, not after the backfill
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ListenError as exc:
        return _fail(exc.strerror or str(exc), EXIT_LISTEN)
    log.info("%s", banner(config, args.config, security.scheme))
    host, _ = parse_listen_address(config.listen_address)
    if config.positions and not security.auth_required and host not in ("127.0.0.1", "::1", "localhost"):
        # /api/state shows sizes and liquidation prices to whoever can reach the port
        log.warning("positions are configured and /api/state has no authentication: see README, Security")
    threading.Thread(target=_reachability, args=(config,), name="reachability", daemon=True).start()
    from exporter.app import run_exporter

    def ready(port: int) -> None:
        log.info("ready: serving %s on port %d", config.telemetry_path, port)

    try:
        return _run_until_signal(lambda stop: run_exporter(config, stop, ready))
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ListenError as exc:
        return _fail(exc.strerror or str(exc), EXIT_LISTEN)


# ---- the other commands ------------------------------------------------------------------------


def cmd_record(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.dir:
        config.recording.dir = Path(args.dir)
    if config.recording.dir is None:
        return _fail("nothing to record into: set recording.dir in the configuration or pass --dir", EXIT_CONFIG)
    if not args.duration > 0:
        return _fail("--duration must be > 0 seconds", EXIT_CONFIG)
    setup_logging(args.log_level or config.log_level, args.log_format)
    from exporter.app import Exporter

    exporter = Exporter(config, serve=False)

    async def record(stop: asyncio.Event) -> int:
        async def timer() -> None:
            await asyncio.sleep(args.duration)
            stop.set()

        t = asyncio.create_task(timer())
        try:
            await exporter.run(stop)
        finally:
            t.cancel()
        stats = exporter.recorder.snapshot() if exporter.recorder is not None else {}
        print(
            f"recorded {stats.get('frames_ws', 0)} frames and {stats.get('frames_rest', 0)} REST bodies "
            f"({stats.get('bytes', 0)} bytes, {stats.get('dropped', 0)} dropped) into {config.recording.dir}"
        )
        return 0

    return _run_until_signal(record)


def cmd_replay(args: argparse.Namespace) -> int:
    from exporter.replay import Replay, parse_step, parse_time, replay_to_openmetrics

    config = _load(args.config) if args.config else Config()
    setup_logging(args.log_level or config.log_level, args.log_format)
    directory = Path(args.dir)
    if not directory.is_dir():
        return _fail(f"{directory}: not a directory", EXIT_CONFIG)
    try:
        start = parse_time(args.time_from) if args.time_from else None
        end = parse_time(args.time_to) if args.time_to else None
        step = parse_step(args.step)
    except ValueError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    if args.openmetrics and args.sidecar:
        return _fail("--openmetrics and --sidecar: one at a time (each replays the recording once)", EXIT_CONFIG)
    if args.openmetrics:

        async def backfill(stop: asyncio.Event) -> int:
            stats, n = await replay_to_openmetrics(
                config, directory, Path(args.openmetrics), step, start=start, end=end
            )
            print(
                f"replayed {stats.lines} lines ({stats.first} .. {stats.last}) in {stats.wall_seconds:.1f} s; "
                f"wrote {n} samples every {step:g} s to {args.openmetrics}"
            )
            return 0

        return _run_until_signal(backfill)
    speed = None if args.as_fast_as_possible else args.speed
    if args.sidecar:
        return _replay_with_sidecar(args, config, directory, start, end, speed)
    if args.listen:
        config.listen_address = args.listen

    async def serve(stop: asyncio.Event) -> int:
        from exporter.server import start_server

        replay = Replay(config, directory, start=start, end=end)
        server = start_server(config, replay.state, replay.registry)
        log.info("replaying %s; serving on port %d", directory, server.port)
        try:
            run = asyncio.create_task(replay.run(speed=speed))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({run, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                s = run.result()
                log.info(
                    "replay done: %d lines in %.1f s; serving the end state until stopped", s.lines, s.wall_seconds
                )
                await stopping
            run.cancel()
        finally:
            await asyncio.to_thread(server.stop)
        return 0

    return _run_until_signal(serve)


def _replay_with_sidecar(
    args: argparse.Namespace,
    config: Config,
    directory: Path,
    start: float | None,
    end: float | None,
    speed: float | None,
) -> int:
    """The AI sidecar (its own configuration file) on the replay's clock; then ``fr-exporter evaluate``."""
    from exporter.replay import Replay, SidecarOnReplay

    sidecar_config = _load(args.sidecar)
    if args.sidecar_db:
        sidecar_config.sidecar.db_path = Path(args.sidecar_db)

    async def run(stop: asyncio.Event) -> int:
        try:
            driver = SidecarOnReplay(Replay(config, directory, start=start, end=end), sidecar_config)
        except ConfigError as exc:
            return _fail(f"sidecar: {exc}", EXIT_CONFIG)
        running = asyncio.create_task(driver.run(speed=speed))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            return 130
        try:
            s = running.result()
        except OSError as exc:
            return _fail(f"sidecar: cannot serve on {sidecar_config.sidecar.listen_address}: {exc}", 1)
        r = s.replay
        print(
            f"replayed {r.lines} lines ({r.first} .. {r.last}) in {r.wall_seconds:.1f} s; the sidecar made "
            f"{s.predictions} predictions ({s.scored} scored) into {s.db}; "
            f"scores: fr-exporter evaluate --config {args.sidecar} --db {s.db}"
        )
        return 0

    return _run_until_signal(run)


def cmd_simulate(args: argparse.Namespace) -> int:
    from exporter.sim import main as sim

    setup_logging(args.log_level or "INFO", args.log_format)
    return _run_until_signal(lambda stop: sim.run(args, stop))


def cmd_sidecar(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if args.listen:
        try:
            parse_listen_address(args.listen)
        except ValueError as exc:
            return _fail(str(exc), EXIT_CONFIG)
        config.sidecar.listen_address = args.listen
    if args.web_config:
        config.sidecar.web_config_file = args.web_config
    setup_logging(args.log_level or config.log_level, args.log_format)
    from exporter.server import ListenError, bind_check
    from exporter.web import WebSecurity

    try:
        WebSecurity.from_file(config.sidecar.web_config_file)
        bind_check(config.sidecar.listen_address)
    except ConfigError as exc:
        return _fail(str(exc), EXIT_CONFIG)
    except ListenError as exc:
        return _fail(exc.strerror or str(exc), EXIT_LISTEN)
    from exporter.sidecar.main import run_sidecar

    return _run_until_signal(lambda stop: run_sidecar(config, stop))


def cmd_evaluate(args: argparse.Namespace) -> int:
    from exporter.sidecar import main as sidecar

    config = _load(args.config)
    setup_logging(args.log_level or "WARNING", args.log_format)
    return int(sidecar.evaluate(config, args))


def cmd_fit_baseline(args: argparse.Namespace) -> int:
    from exporter.sidecar import fit

    return fit.run(args)


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(f"fr-exporter: {exc}", file=sys.stderr)
        return 1
    # unset secret variables, unreadable secret and TLS files, each with its field and line
    problems = runtime_problems(config)
    for problem in problems:
        print(f"fr-exporter: {problem}", file=sys.stderr)
    if problems:
        print(f"{args.file}: {len(problems)} problem(s) that would stop a start", file=sys.stderr)
        return 1
    # the web configs (TLS files, bcrypt hashes) as the exporter and the sidecar would load them
    from exporter.server import security_for
    from exporter.web import WebSecurity

    try:
        security_for(config)
        WebSecurity.from_file(config.sidecar.web_config_file)
    except ConfigError as exc:
        print(f"fr-exporter: {exc}", file=sys.stderr)
        return 1
    for issue in config.position_issues:
        print(f"fr-exporter: position skipped: {issue.message}", file=sys.stderr)
    exchanges = ", ".join(
        f"{ex.value} ({len(config.instruments_for(ex))} instruments)" for ex in config.enabled_exchanges()
    )
    # positions, not errors: one position with two bad fields is one invalid position
    invalid = len({i.index for i in config.position_issues})
    if invalid:
        print(f"{args.file}: {invalid} invalid position(s); the exporter would skip them", file=sys.stderr)
        return 1
    print(f"{args.file}: OK — exchanges: {exchanges or 'none'}; positions: {len(config.positions)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from exporter.demo import run

    return run(args)


def cmd_top(args: argparse.Namespace) -> int:
    from exporter.top import run

    return run(args)


# ---- the parser --------------------------------------------------------------------------------


class _HelpFormatter(argparse.HelpFormatter):
    """Room for the longest command name: argparse (3.11) measures subcommands without their
    indent, which pushed ``check-config``'s help onto a second line."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        self._action_max_length = max(self._action_max_length, 4 + max(map(len, COMMANDS)))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``command`` given) one whose other commands are listed without their
    flags: simulate, fit-baseline, demo and top take theirs from their modules, whose imports (the
    simulator, numpy) would cost every other command's start a third of a second."""
    p = argparse.ArgumentParser(
        prog="fr-exporter",
        description="Prometheus exporter for crypto perpetual-futures funding rates and liquidation risk.",
        epilog="`fr-exporter COMMAND --help` for a command's flags. Without a command: run.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"fr-exporter {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)
    parsers = {
        name: sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        for name, text in COMMANDS.items()
    }

    run = parsers["run"]
    _config_args(run)
    _web_args(run, 9466)
    run.add_argument(
        "--web.telemetry-path", dest="telemetry_path", metavar="PATH", help="path of the metrics (default /metrics)"
    )
    run.add_argument(
        "--shard",
        metavar="K/S",
        help="follow only the base assets of shard K of S (0-based; overrides shard: in the config)",
    )
    run.add_argument("--version", action="version", version=f"fr-exporter {__version__}")
    _log_args(run)
    run.set_defaults(handler=cmd_run)

    def wanted(name: str) -> bool:
        return command is None or command == name

    if wanted("simulate"):
        from exporter.sim import main as sim

        simulate = parsers["simulate"]
        _log_args(simulate, "INFO")
        sim.add_arguments(simulate)
        simulate.set_defaults(handler=cmd_simulate)

    sidecar = parsers["sidecar"]
    _config_args(sidecar)
    _web_args(sidecar, 9467)
    _log_args(sidecar)
    sidecar.set_defaults(handler=cmd_sidecar)

    evaluate = parsers["evaluate"]
    _config_args(evaluate)
    evaluate.add_argument("--db", dest="db", help="predictions database (default: sidecar.db_path)")
    evaluate.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    evaluate.add_argument("--format", dest="format", choices=["text", "json"], default="text", help="output format")
    evaluate.add_argument("--plot", dest="plot", default=None, help="write a PNG: reliability and skill over time")
    _log_args(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)
    if wanted("fit-baseline"):
        from exporter.sidecar import fit

        fit.add_arguments(parsers["fit-baseline"])
        parsers["fit-baseline"].set_defaults(handler=cmd_fit_baseline)

    record = parsers["record"]
    _config_args(record)
    record.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to record")
    record.add_argument("--dir", help="directory of the recording (default: recording.dir of the configuration)")
    _log_args(record)
    record.set_defaults(handler=cmd_record)

    replay = parsers["replay"]
    replay.add_argument("dir", help="directory of the recording")
    _config_args(replay)
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="N", help="N times real time (default 1)")
    pace.add_argument("--as-fast-as-possible", action="store_true", help="no pacing")
    replay.add_argument("--from", dest="time_from", metavar="T", help="start (Unix seconds or ISO 8601)")
    replay.add_argument("--to", dest="time_to", metavar="T", help="end (Unix seconds or ISO 8601)")
    replay.add_argument("--openmetrics", metavar="OUT", help="write OpenMetrics with timestamps instead of serving")
    replay.add_argument("--step", default="15s", help="time between OpenMetrics samples (default 15s)")
    replay.add_argument("--web.listen-address", dest="listen", metavar="ADDR", help="where to serve (default: config)")
    replay.add_argument(
        "--sidecar",
        metavar="CONFIG",
        help="run the AI sidecar (the sidecar section of CONFIG) on the replay's clock instead of serving",
    )
    replay.add_argument("--sidecar-db", metavar="PATH", help="the sidecar's predictions database (default: CONFIG's)")
    _log_args(replay)
    replay.set_defaults(handler=cmd_replay)

    check = parsers["check-config"]
    check.add_argument("file")
    check.set_defaults(handler=cmd_check_config)

    if wanted("demo"):
        from exporter import demo

        demo.add_arguments(parsers["demo"])
        parsers["demo"].set_defaults(handler=cmd_demo)
    if wanted("top"):
        from exporter import top

        top.add_arguments(parsers["top"])
        parsers["top"].set_defaults(handler=cmd_top)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run", *argv]  # `fr-exporter --config x.yaml` runs the exporter
    elif not argv[0].startswith("-") and argv[0] not in COMMANDS:
        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return _fail(f"unknown command {argv[0]!r}{hint} (commands: {', '.join(COMMANDS)})", EXIT_CONFIG)
    args = build_parser(argv[0]).parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
