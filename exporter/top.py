"""``fr-exporter top``: a live terminal table of the exporter's /api/state (rich).

Per base asset, one row per exchange: funding per interval and annualised (interval shown), time to
the next settlement, z-score, open interest, 1 h liquidations, the base's best cross-exchange spread
and the exchange's stream health. Refreshes every ``--interval`` seconds; ``s`` cycles the sort
column, ``r`` reverses it, ``q`` quits. ``--once`` prints the table and exits (scripts, cron).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

SORT_KEYS = ("base", "funding", "annualized", "next", "zscore", "oi", "liq", "spread")


@dataclass(frozen=True, slots=True)
class Row:
    base: str
    exchange: str
    instrument: str
    up: bool
    stale: bool
    funding: float | None  # per interval
    interval_s: float | None
    funding_8h: float | None
    annualized: float | None
    next_s: float | None  # seconds to the next settlement
    zscore: float | None
    oi_usd: float | None
    liq_1h_usd: float
    spread_bp: float | None  # the base's best cross-exchange spread, per 8 h, in bp
    spread_pair: str


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _liq_1h(row: dict[str, Any]) -> float:
    liq = row.get("liquidations_1h") or {}
    total = 0.0
    for side in ("long", "short"):
        v = (liq.get(side) or {}).get("notional_usd") if isinstance(liq, dict) else None
        total += _num(v) or 0.0
    return total


def rows_from_state(doc: dict[str, Any]) -> list[Row]:
    """The table's rows from an /api/state document (pure: tested without a terminal)."""
    now = _num(doc.get("generated_at")) or time.time()
    exchanges = doc.get("exchanges") or {}
    instruments = [r for r in doc.get("instruments") or [] if isinstance(r, dict)]
    # best spread per base: the widest 8 h-equivalent gap between two exchanges' funding
    by_base: dict[str, list[tuple[float, str]]] = {}
    for r in instruments:
        f8 = _num(r.get("funding_rate_8h"))
        if f8 is not None:
            by_base.setdefault(str(r.get("base")), []).append((f8, str(r.get("exchange"))))
    spreads: dict[str, tuple[float, str]] = {}
    for base, vals in by_base.items():
        if len({ex for _, ex in vals}) >= 2:
            lo, hi = min(vals), max(vals)
            spreads[base] = ((hi[0] - lo[0]) * 1e4, f"{hi[1]}/{lo[1]}")
    out = []
    for r in instruments:
        base, ex = str(r.get("base")), str(r.get("exchange"))
        nxt = _num(r.get("next_funding_timestamp"))
        spread = spreads.get(base)
        out.append(
            Row(
                base=base,
                exchange=ex,
                instrument=str(r.get("instrument")),
                up=bool((exchanges.get(ex) or {}).get("up")),
                stale=bool(r.get("stale")),
                funding=_num(r.get("funding_rate")),
                interval_s=_num(r.get("funding_interval_seconds")),
                funding_8h=_num(r.get("funding_rate_8h")),
                annualized=_num(r.get("funding_rate_annualized")),
                next_s=nxt - now if nxt is not None else None,
                zscore=_num(r.get("funding_zscore")),
                oi_usd=_num(r.get("open_interest_usd")),
                liq_1h_usd=_liq_1h(r),
                spread_bp=spread[0] if spread else None,
                spread_pair=spread[1] if spread else "",
            )
        )
    return out


def sort_rows(rows: list[Row], key: str, reverse: bool = False) -> list[Row]:
    """Sort by a column; rows without a value go last whatever the direction."""
    if key == "base":
        return sorted(rows, key=lambda r: (r.base, r.exchange, r.instrument), reverse=reverse)
    pick = {
        "funding": lambda r: r.funding_8h,
        "annualized": lambda r: r.annualized,
        "next": lambda r: r.next_s,
        "zscore": lambda r: abs(r.zscore) if r.zscore is not None else None,
        "oi": lambda r: r.oi_usd,
        "liq": lambda r: r.liq_1h_usd,
        "spread": lambda r: r.spread_bp,
    }[key]
    have = [r for r in rows if pick(r) is not None]
    missing = [r for r in rows if pick(r) is None]
    # default direction: largest first for magnitudes, soonest first for the next settlement
    descending = key != "next"
    have.sort(key=lambda r: (pick(r), r.base, r.exchange), reverse=descending != reverse)
    return have + missing


# ---- rendering --------------------------------------------------------------------------------


def _usd(v: float | None) -> str:
    if v is None:
        return "-"
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"${v / div:,.2f}{unit}"
    return f"${v:,.0f}"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 0:
        return "due"
    h, rem = divmod(int(s), 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def build_table(rows: list[Row], doc: dict[str, Any], sort: str, reverse: bool, source: str, live: bool = False) -> Any:
    from rich.table import Table
    from rich.text import Text

    exchanges = doc.get("exchanges") or {}
    health = "  ".join(
        f"[{'green' if (v or {}).get('up') else 'bold red'}]{ex} {'up' if (v or {}).get('up') else 'DOWN'}[/]"
        for ex, v in sorted(exchanges.items())
    )
    generated = _num(doc.get("generated_at"))
    when = time.strftime("%H:%M:%S", time.localtime(generated)) if generated else "?"
    table = Table(
        title=f"fr-exporter top — {source} at {when} — sorted by {sort}{' (reversed)' if reverse else ''}",
        caption=f"streams: {health}" + ("   keys: s sort  r reverse  q quit" if live else ""),
        header_style="bold",
        expand=False,
    )
    for name, justify in (
        ("base", "left"),
        ("exchange", "left"),
        ("instrument", "left"),
        ("funding", "right"),
        ("every", "right"),
        ("annualised", "right"),
        ("next in", "right"),
        ("z", "right"),
        ("open interest", "right"),
        ("liq 1h", "right"),
        ("best spread 8h", "right"),
        ("stream", "center"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    last_base = None
    for r in rows:
        colour = "green" if (r.funding or 0) > 0 else "red" if (r.funding or 0) < 0 else ""
        z = Text("-" if r.zscore is None else f"{r.zscore:+.2f}")
        if r.zscore is not None and abs(r.zscore) >= 2.5:
            z.stylize("bold yellow")
        spread = (
            ""
            if r.base == last_base and sort == "base"
            else ("-" if r.spread_bp is None else f"{r.spread_bp:.1f} bp {r.spread_pair}")
        )
        table.add_row(
            r.base if r.base != last_base or sort != "base" else "",
            r.exchange,
            r.instrument,
            Text("-" if r.funding is None else f"{r.funding * 100:+.4f}%", style=colour),
            "-" if r.interval_s is None else f"{r.interval_s / 3600:g}h",
            Text("-" if r.annualized is None else f"{r.annualized * 100:+.1f}%", style=colour),
            _duration(r.next_s),
            z,
            _usd(r.oi_usd),
            _usd(r.liq_1h_usd) if r.liq_1h_usd else "-",
            spread,
            Text("stale", style="yellow") if r.stale else Text("up", style="green") if r.up else Text("DOWN", "red"),
        )
        last_base = r.base
    return table


# ---- fetching ---------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="the exporter (default: from --config's listen_address, else http://127.0.0.1:9466)")
    p.add_argument("--config", "--config.file", dest="config", metavar="FILE", help="take the exporter's address")
    p.add_argument("--interval", type=float, default=2.0, help="refresh period in seconds (default 2)")
    p.add_argument("--sort", choices=SORT_KEYS, default="base", help="sort column (default base)")
    p.add_argument("--reverse", action="store_true", help="reverse the sort")
    p.add_argument("--once", action="store_true", help="print the table once and exit")
    p.add_argument("--user", help="basic-auth user (the password from $FR_TOP_PASSWORD or --password-file)")
    p.add_argument("--password-file", type=Path, help="file holding the basic-auth password")
    p.add_argument("--ca-file", type=Path, help="CA certificate that signed the exporter's TLS certificate")


def _url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url).rstrip("/")
    if args.config:
        from exporter.config import load_config

        cfg = load_config(args.config)
        host, port = cfg.listen_address.rsplit(":", 1)
        host = host.strip("[]")
        host = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        tls = cfg.tls is not None
        if cfg.web_config_file is not None:
            from exporter.web import load_web_config

            tls = load_web_config(cfg.web_config_file).tls_server_config is not None
        scheme = "https" if tls else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
    return "http://127.0.0.1:9466"


def _client(args: argparse.Namespace) -> httpx.Client:
    auth = None
    if args.user:
        if args.password_file is not None:
            password = args.password_file.read_text(encoding="utf-8").strip()
        else:
            password = os.environ.get("FR_TOP_PASSWORD", "")
        auth = httpx.BasicAuth(args.user, password)
    verify: Any = True
    if args.ca_file is not None:
        import ssl

        verify = ssl.create_default_context(cafile=str(args.ca_file))
    return httpx.Client(timeout=5.0, auth=auth, verify=verify)


def fetch(client: httpx.Client, url: str) -> dict[str, Any]:
    r = client.get(url + "/api/state")
    if r.status_code == 401:
        raise RuntimeError("the exporter wants credentials (--user, and $FR_TOP_PASSWORD or --password-file)")
    r.raise_for_status()
    doc = r.json()
    if not isinstance(doc, dict):
        raise RuntimeError("/api/state did not answer a JSON object")
    return doc


@contextlib.contextmanager
def _keys() -> Iterator[list[str]]:
    """Key presses from a terminal's stdin (cbreak mode), collected by a reader thread."""
    pressed: list[str] = []
    if not sys.stdin.isatty():
        yield pressed
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    old = termios.tcgetattr(fd)
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                pressed.append(os.read(fd, 1).decode(errors="ignore"))

    tty.setcbreak(fd)
    t = threading.Thread(target=reader, name="top-keys", daemon=True)
    t.start()
    try:
        yield pressed
    finally:
        done.set()
        t.join(1)
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    console = Console()
    try:
        url = _url(args)
    except Exception as exc:  # a config error: one line
        print(f"fr-exporter top: {exc}", file=sys.stderr)
        return 2
    sort, reverse = args.sort, args.reverse
    with _client(args) as client:
        if args.once:
            try:
                once = fetch(client, url)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                print(f"fr-exporter top: cannot read {url}/api/state: {exc}", file=sys.stderr)
                return 1
            console.print(build_table(sort_rows(rows_from_state(once), sort, reverse), once, sort, reverse, url))
            return 0
        doc: dict[str, Any] = {}
        error = ""
        with _keys() as pressed, Live(console=console, auto_refresh=False, screen=False) as live:
            next_fetch = 0.0
            try:
                while True:
                    if time.monotonic() >= next_fetch:
                        try:
                            doc, error = fetch(client, url), ""
                        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                            error = f"cannot read {url}/api/state: {exc}"
                        next_fetch = time.monotonic() + args.interval
                    while pressed:
                        key = pressed.pop(0).lower()
                        if key == "q":
                            return 0
                        if key == "s":
                            sort = SORT_KEYS[(SORT_KEYS.index(sort) + 1) % len(SORT_KEYS)]
                        elif key == "r":
                            reverse = not reverse
                    if error:
                        from rich.text import Text

                        live.update(Text(error, style="bold red"), refresh=True)
                    else:
                        rows = sort_rows(rows_from_state(doc), sort, reverse)
                        live.update(build_table(rows, doc, sort, reverse, url, live=True), refresh=True)
                    time.sleep(0.1)
            except KeyboardInterrupt:
                return 0
