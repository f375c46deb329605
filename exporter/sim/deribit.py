"""Deribit protocol: JSON-RPC 2.0 over /ws/api/v2 and over HTTP GET /api/v2/public/* (reference section 5)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from exporter.model import Exchange, Side
from exporter.sim import futures_wire
from exporter.sim.market import Instrument, SimLiquidation
from exporter.sim.server import Conn, ExchangeServer, Handler, dumps, ms


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data

    def body(self) -> dict[str, Any]:
        e: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.data:
            e["data"] = self.data
        return e


def invalid(param: str, reason: str) -> RpcError:
    return RpcError(-32602, "Invalid params", {"reason": reason, "param": param})


def currency_of(inst: Instrument) -> str:
    """The `currency` a perpetual is listed under: BTC for BTC-PERPETUAL, USDC for BTC_USDC-PERPETUAL."""
    return inst.spec.base if inst.spec.inverse else inst.spec.quote


CHART_RESOLUTIONS = {"1": 60, "3": 180, "5": 300, "10": 600, "15": 900, "30": 1800, "60": 3600, "120": 7200,
                     "180": 10800, "360": 21600, "720": 43200, "1D": 86400}  # fmt: skip


class DeribitServer(ExchangeServer):
    exchange = Exchange.DERIBIT
    ws_paths = ("/ws/api/v2",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trade_seq = 200_000_000
        self._trade_id = 400_000_000
        self._last_agg2 = -1
        self._stats = {
            sym: {"open": i.mark * 0.99, "high": i.mark * 1.01, "low": i.mark * 0.985, "volume": 0.0}
            for sym, i in self.market.instruments[self.exchange].items()
        }
        self._methods: dict[str, Callable[[dict[str, Any]], Any]] = {
            "public/get_instruments": self.m_get_instruments,
            "public/get_funding_rate_history": self.m_funding_history,
            "public/get_book_summary_by_currency": self.m_book_summary,
            "public/ticker": self.m_ticker,
            "public/get_time": lambda p: ms(self.server_now()),
            "public/test": lambda p: {"version": "1.2.26"},
            "public/get_tradingview_chart_data": self.m_chart,
        }

    # ------------------------------------------------------------------------------------------
    # messages

    def ticker(self, inst: Instrument) -> dict[str, Any]:
        s = inst.spec
        st = self._stats[s.symbol]
        tick = 0.5 if s.base == "BTC" and s.inverse else 10**-s.price_decimals
        last = round(round(inst.mark / tick) * tick, s.price_decimals)
        oi = round(inst.oi_usd / s.contract_size) * s.contract_size if s.inverse else round(inst.oi_base, 4)
        return {
            "timestamp": ms(self.stamp_now()),
            "state": "open",
            "stats": {
                "high": round(st["high"], 2),
                "low": round(st["low"], 2),
                "price_change": round((inst.mark / st["open"] - 1) * 100, 4),
                "volume": round(st["volume"], 8),
                "volume_usd": round(st["volume"] * inst.mark, 0),
                "volume_notional": round(st["volume"] * inst.mark, 0),
            },
            "index_price": round(inst.index, 2 if inst.index > 100 else 6),
            "instrument_name": s.symbol,
            "last_price": last,
            "settlement_price": round(st["open"], 2),
            "min_price": round(inst.mark * 0.985, 2),
            "max_price": round(inst.mark * 1.015, 2),
            "open_interest": float(oi),
            "mark_price": round(inst.mark, 2 if inst.mark > 100 else 6),
            "interest_value": round(inst.funding_8h * 3 * 30, 12),
            "best_ask_price": round(last + tick, s.price_decimals),
            "best_bid_price": last,
            "estimated_delivery_price": round(inst.index, 2 if inst.index > 100 else 6),
            "best_ask_amount": 1000.0 * s.contract_size,
            "best_bid_amount": 800.0 * s.contract_size,
            "current_funding": round(inst.funding_rate, 12),
            "funding_8h": round(inst.funding_8h, 12),
        }

    def trade(
        self, inst: Instrument, t: float, price: float, amount: float, direction: str, liquidation: str | None
    ) -> dict[str, Any]:
        self._trade_seq += 1
        self._trade_id += 1
        item: dict[str, Any] = {
            "timestamp": ms(t),
            "price": price,
            "amount": amount,
            "direction": direction,
            "index_price": round(inst.index, 2),
            "instrument_name": inst.spec.symbol,
            "trade_seq": self._trade_seq,
            "mark_price": round(inst.mark, 2),
            "tick_direction": 0 if direction == "buy" else 2,
            "contracts": amount / inst.spec.contract_size,
            "trade_id": str(self._trade_id),
        }
        if liquidation:
            item["liquidation"] = liquidation
        return item

    def liq_trade(self, inst: Instrument, liq: SimLiquidation) -> dict[str, Any]:
        # The liquidated position is closed by a forced order: long -> sell. "T": the taker was the
        # liquidated side (direction = its order); "M": the maker was (direction = the other side).
        forced = "sell" if liq.side is Side.LONG else "buy"
        maker = liq.seq % 4 == 0
        direction = ("buy" if forced == "sell" else "sell") if maker else forced
        amount = liq.notional_usd if inst.spec.inverse else liq.qty_base
        if inst.spec.inverse and inst.spec.base == "BTC":
            price = round(liq.price * 2) / 2  # tick 0.5
        else:
            price = round(liq.price, inst.spec.price_decimals)  # the truth's notional uses this price
        return self.trade(inst, liq.time + self.stamp_shift_s, price, float(amount), direction, "M" if maker else "T")

    def notify(self, channel: str, data: Any) -> str:
        return dumps({"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}})

    def _envelope(self, rid: Any, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
        us = int(time.time() * 1e6)
        body: dict[str, Any] = {"jsonrpc": "2.0"}
        if rid is not None:
            body["id"] = rid
        if error is not None:
            body["error"] = error.body()
        else:
            body["result"] = result
        body.update({"usIn": us, "usOut": us + 120, "usDiff": 120, "testnet": False})
        return body

    # ------------------------------------------------------------------------------------------
    # methods (shared by WS and HTTP)

    def _inst(self, params: dict[str, Any]) -> Instrument:
        name = params.get("instrument_name")
        if not name:
            raise invalid("instrument_name", "must be present")
        inst = self.market.get(self.exchange, str(name))
        if inst is None:
            raise invalid("instrument_name", "wrong format")
        return inst

    def _by_currency(self, params: dict[str, Any]) -> list[Instrument]:
        cur = str(params.get("currency", "")).upper()
        if not cur:
            raise invalid("currency", "must be present")
        kind = params.get("kind")
        if kind not in (None, "", "future", "any"):
            return []
        return [i for i in self.market.instruments[self.exchange].values() if cur == "ANY" or currency_of(i) == cur]

    def m_get_instruments(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for inst in self._by_currency(params):
            s = inst.spec
            out.append(
                {
                    "tick_size": 0.5 if s.inverse and s.base == "BTC" else 10**-s.price_decimals,
                    "taker_commission": 0.0005,
                    "settlement_period": "perpetual",
                    "quote_currency": s.quote,
                    "min_trade_amount": s.contract_size,
                    "max_liquidation_commission": 0.0075,
                    "max_leverage": 50,
                    "maker_commission": 0.0,
                    "kind": "future",
                    "is_active": True,
                    "instrument_name": s.symbol,
                    "expiration_timestamp": 32503708800000,
                    "creation_timestamp": 1534242287000,
                    "contract_size": s.contract_size,
                    "block_trade_commission": 0.00025,
                    "base_currency": s.base,
                }
            )
        if params.get("kind") in (None, "", "future", "any"):
            out.extend(futures_wire.deribit_rows(self.market, str(params.get("currency", ""))))
        return out

    def m_funding_history(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        inst = self._inst(params)
        try:
            start = int(params["start_timestamp"])
            end = int(params["end_timestamp"])
        except (KeyError, TypeError, ValueError):
            raise invalid("start_timestamp", "start_timestamp and end_timestamp must be present") from None
        return [
            {
                "timestamp": h.time_ms,
                "index_price": round(h.index, 2),
                "prev_index_price": round(h.prev_index, 2),
                "interest_8h": h.rate,
                "interest_1h": h.interest_1h,
            }
            for h in inst.history
            if start <= h.time_ms <= end
        ]

    def m_chart(self, params: dict[str, Any]) -> dict[str, Any]:
        """Trade-price candles; this simulator trades at the mark, so they are the mark's."""
        inst = self._inst(params)
        try:
            start = int(params["start_timestamp"]) / 1000
            end = int(params["end_timestamp"]) / 1000
        except (KeyError, TypeError, ValueError):
            raise invalid("start_timestamp", "start_timestamp and end_timestamp must be present") from None
        res = CHART_RESOLUTIONS.get(str(params.get("resolution", "")))
        if res is None:
            raise invalid("resolution", "must be one of " + ",".join(CHART_RESOLUTIONS))
        rows = self.market.tape.candles(inst, "mark", res, start, min(end, self.market.now))
        if not len(rows):
            return {
                "status": "no_data",
                "ticks": [],
                "open": [],
                "high": [],
                "low": [],
                "close": [],
                "volume": [],
                "cost": [],
            }
        return {
            "status": "ok",
            "ticks": [int(t * 1000) for t in rows[:, 0]],
            "open": [float(x) for x in rows[:, 1]],
            "high": [float(x) for x in rows[:, 2]],
            "low": [float(x) for x in rows[:, 3]],
            "close": [float(x) for x in rows[:, 4]],
            "volume": [0.0] * len(rows),
            "cost": [0.0] * len(rows),
        }

    def m_book_summary(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for inst in self._by_currency(params):
            t = self.ticker(inst)
            s = inst.spec
            out.append(
                {
                    "volume_usd": t["stats"]["volume_usd"],
                    "volume_notional": t["stats"]["volume_notional"],
                    "volume": t["stats"]["volume"],
                    "quote_currency": s.quote,
                    "price_change": t["stats"]["price_change"],
                    "open_interest": t["open_interest"],
                    "mid_price": (t["best_bid_price"] + t["best_ask_price"]) / 2,
                    "mark_price": t["mark_price"],
                    "low": t["stats"]["low"],
                    "last": t["last_price"],
                    "instrument_name": s.symbol,
                    "high": t["stats"]["high"],
                    "funding_8h": t["funding_8h"],
                    "estimated_delivery_price": t["estimated_delivery_price"],
                    "current_funding": t["current_funding"],
                    "creation_timestamp": ms(self.stamp_now()),
                    "bid_price": t["best_bid_price"],
                    "base_currency": s.base,
                    "ask_price": t["best_ask_price"],
                }
            )
        return out

    def m_ticker(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.ticker(self._inst(params))

    # ------------------------------------------------------------------------------------------
    # websocket

    def _valid_channel(self, ch: str) -> bool:
        parts = ch.split(".")
        if len(parts) == 3 and parts[0] == "ticker" and parts[1] in futures_wire.futures_of(self.market, self.exchange):
            return parts[2] in ("100ms", "agg2")  # a dated future: its ticker
        return (
            len(parts) == 3
            and parts[0] in ("ticker", "trades")
            and parts[2] in ("100ms", "agg2")
            and parts[1] in self.market.instruments[self.exchange]
        )

    async def on_open(self, conn: Conn, request: web.Request) -> None:
        conn.extra["awaiting"] = False

    async def on_close(self, conn: Conn) -> None:
        task = conn.extra.pop("hb_task", None)
        if task is not None:
            task.cancel()

    async def _heartbeat(self, conn: Conn, interval: float) -> None:
        """Send test_request every interval; close if the previous one was not answered (as Deribit)."""
        with contextlib.suppress(asyncio.CancelledError):
            while not conn.ws.closed:
                await asyncio.sleep(interval)
                if conn.extra.get("awaiting"):
                    conn.closing = True
                    await conn.ws.close(code=1000, message=b"heartbeat test_request not answered")
                    return
                conn.extra["awaiting"] = True
                self.send(
                    conn,
                    dumps({"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}),
                    data=False,
                )

    async def on_text(self, conn: Conn, text: str) -> None:
        try:
            req = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.send(conn, dumps(self._envelope(None, error=RpcError(-32700, "Parse error"))), data=False)
            return
        if not isinstance(req, dict):
            self.send(conn, dumps(self._envelope(None, error=RpcError(-32600, "Invalid Request"))), data=False)
            return
        rid = req.get("id")
        method = str(req.get("method", "")).lstrip("/")
        params = req.get("params") or {}
        try:
            result = self._ws_method(conn, method, params if isinstance(params, dict) else {})
        except RpcError as exc:
            self.send(conn, dumps(self._envelope(rid, error=exc)), data=False)
            return
        self.send(conn, dumps(self._envelope(rid, result)), data=False)

    def _ws_method(self, conn: Conn, method: str, params: dict[str, Any]) -> Any:
        if method == "public/subscribe":
            chans = params.get("channels")
            if not isinstance(chans, list):
                raise invalid("channels", "must be an array")
            ok = [c for c in chans if isinstance(c, str) and self._valid_channel(c)]
            conn.topics.update(ok)
            return ok
        if method == "public/unsubscribe":
            chans = [c for c in params.get("channels") or [] if isinstance(c, str)]
            conn.topics.difference_update(chans)
            return chans
        if method == "public/set_heartbeat":
            try:
                interval = float(params["interval"])
            except (KeyError, TypeError, ValueError):
                raise invalid("interval", "must be present") from None
            if interval < self.options.deribit_min_heartbeat_s:
                raise invalid("interval", f"must be greater or equal {self.options.deribit_min_heartbeat_s:g}")
            old = conn.extra.pop("hb_task", None)
            if old is not None:
                old.cancel()
            conn.extra["awaiting"] = False
            conn.extra["hb_task"] = asyncio.get_running_loop().create_task(self._heartbeat(conn, interval))
            return "ok"
        if method == "public/disable_heartbeat":
            old = conn.extra.pop("hb_task", None)
            if old is not None:
                old.cancel()
            return "ok"
        if method == "public/test":
            conn.extra["awaiting"] = False
            return {"version": "1.2.26"}
        fn = self._methods.get(method)
        if fn is None:
            raise RpcError(-32601, "Method not found")
        return fn(params)

    def on_tick(self, now: float) -> None:
        liqs = self.market.drain_liquidations(self.exchange)
        insts = self.market.instruments[self.exchange]
        for sym, inst in insts.items():
            st = self._stats[sym]
            st["high"] = max(st["high"], inst.mark)
            st["low"] = min(st["low"], inst.mark)
        if not self.publishing():
            return  # lost: a stalled or stopped exchange pushes nothing
        sec2 = math.floor(now / 2)
        agg2 = sec2 != self._last_agg2
        self._last_agg2 = sec2
        by_sym: dict[str, list[SimLiquidation]] = {}
        for liq in liqs:
            by_sym.setdefault(liq.symbol, []).append(liq)
        for sym, inst in insts.items():
            for iv in ("100ms", "agg2") if agg2 else ("100ms",):
                ch = f"ticker.{sym}.{iv}"
                if self.subscribers(ch):
                    self.broadcast(ch, self.notify(ch, self.ticker(inst)))
            trades = [self.liq_trade(inst, x) for x in by_sym.get(sym, [])]
            # a small ordinary trade now and then, so the trades channel is not only liquidations
            if int(now * 4) % 7 == 0:
                amt = 10.0 * inst.spec.contract_size if inst.spec.inverse else inst.spec.contract_size
                self._stats[sym]["volume"] += amt / inst.mark if inst.spec.inverse else amt
                trades.append(
                    self.trade(inst, now, round(inst.mark, 2), amt, "buy" if inst.noise >= 0 else "sell", None)
                )
            ch = f"trades.{sym}.100ms"
            if trades and self.subscribers(ch):
                self.broadcast(ch, self.notify(ch, trades))
            for x in by_sym.get(sym, []):
                self.market.record_sent(x)

    # ------------------------------------------------------------------------------------------
    # HTTP JSON-RPC

    def rest_routes(self) -> list[tuple[str, Handler]]:
        return [("/api/v2/public/{method}", self.http_rpc)]

    async def http_rpc(self, request: web.Request) -> web.Response:
        method = "public/" + request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        fn = self._methods.get(method)
        try:
            if fn is None:
                raise RpcError(-32601, "Method not found")
            result = fn(params)
        except RpcError as exc:
            return web.json_response(self._envelope(None, error=exc), status=400, dumps=dumps)
        return web.json_response(self._envelope(None, result), dumps=dumps)
