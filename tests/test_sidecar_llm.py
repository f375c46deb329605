"""The sidecar against a fake OpenAI-compatible server: every failure is counted by reason, the last
valid prediction stays published, and the sidecar recovers when the server does."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import free_port, wait_until
from support.fakes import FakeExporter, FakeOpenAI, instrument, state

from exporter.config import Config, ModelConfig, SidecarConfig
from exporter.sidecar.main import Sidecar

KEY_ENV = "FR_TEST_LLM_KEY"
SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


def _config(tmp_path: Path, llm_url: str, exporter_url: str, **model: object) -> Config:
    m = ModelConfig(
        name="fake-gpt",
        base_url=f"{llm_url}/v1",
        model="gpt-fake",
        api_key_env=KEY_ENV,
        timeout_seconds=0.4,
        retries=0,
        backoff_seconds=0.01,
        price_prompt_per_million_usd=2.0,
        price_completion_per_million_usd=10.0,
    )
    m = m.model_copy(update=model)
    return Config(
        sidecar=SidecarConfig(
            exporter_url=exporter_url,
            listen_address=f"127.0.0.1:{free_port()}",
            db_path=tmp_path / "pred.sqlite",
            baseline=False,
            models=[m],
        )
    )


def _btc_state() -> dict[str, Any]:
    return state([instrument("binance", "BTCUSDT"), instrument("bybit", "BTCUSDT"), instrument("okx", "BTC-USDT-SWAP")])


async def _predict(sc: Sidecar) -> None:
    sc.trigger(["BTC"], "test")
    await sc.wait_idle()


def _val(sc: Sidecar, name: str, **labels: str) -> float | None:
    return sc.registry.get_sample_value(name, labels)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)


async def test_each_failure_is_counted_and_last_good_value_is_kept(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _btc_state()
        # the slow answer comes 50 times the 0.4 s timeout after the request: giving up at the timeout and
        # waiting for the answer stay far apart however slowly a loaded machine runs the rest of the call
        llm.slow_seconds = 20.0  # (the fake's handler is cancelled when it closes)
        llm.retry_after = "0"
        sc = Sidecar(_config(tmp_path, llm.url, exp.url))
        try:
            await sc.read_state()
            llm.then("valid")
            await _predict(sc)
            labels = {"base": "BTC", "horizon": "8h", "model": "fake-gpt"}
            assert _val(sc, "fr_ai_risk_probability", calibration="raw", **labels) == pytest.approx(0.42)
            assert _val(sc, "fr_ai_risk_level", base="BTC", horizon="8h", model="fake-gpt", level="high") == 1.0
            assert _val(sc, "fr_ai_risk_level", base="BTC", horizon="8h", model="fake-gpt", level="low") == 0.0
            last_ok = _val(sc, "fr_ai_last_success_timestamp_seconds", base="BTC", model="fake-gpt")
            assert last_ok is not None and abs(last_ok - time.time()) < 5
            # tokens and cost at the configured prices: 120 * 2 / 1e6 + 40 * 10 / 1e6
            assert _val(sc, "fr_ai_tokens_total", model="fake-gpt", kind="prompt") == 120
            assert _val(sc, "fr_ai_cost_usd_total", model="fake-gpt") == pytest.approx(120 * 2e-6 + 40 * 1e-5)
            # the request asked for JSON output and carried the key
            assert llm.requests[0]["response_format"] == {"type": "json_object"}
            assert llm.auth_headers[0] == f"Bearer {SECRET}"
            assert "BTCUSDT" in llm.requests[0]["messages"][1]["content"]

            cases = [
                ("slow", "timeout"),
                ("500", "http_error"),
                ("429", "rate_limited"),
                ("invalid_json", "invalid_json"),
                ("prob_1_7", "schema"),
                ("missing_field", "schema"),
                ("not_openai", "bad_response"),
            ]
            expected: dict[str, int] = {}
            for mode, reason in cases:
                llm.then(mode)
                started = time.monotonic()
                await _predict(sc)
                if mode == "slow":
                    assert time.monotonic() - started < 10.0  # gave up at the timeout, not after the answer
                expected[reason] = expected.get(reason, 0) + 1
                for r, n in expected.items():
                    assert _val(sc, "fr_ai_request_failures_total", model="fake-gpt", reason=r) == n, (mode, r)
                # nothing unvalidated reached a metric: the last good answer is still there, same timestamp
                assert _val(sc, "fr_ai_risk_probability", calibration="raw", **labels) == pytest.approx(0.42)
                assert _val(sc, "fr_ai_last_success_timestamp_seconds", base="BTC", model="fake-gpt") == last_ok
            assert _val(sc, "fr_ai_requests_total", model="fake-gpt") == 1 + len(cases)
            assert sc.store.prediction_count() == 1

            # recovery: JSON wrapped in prose, then a fenced block, each a new valid value
            llm.answer = {**llm.answer, "liquidation_probability": 0.55}
            llm.then("prose")
            await _predict(sc)
            assert _val(sc, "fr_ai_risk_probability", calibration="raw", **labels) == pytest.approx(0.55)
            llm.answer = {**llm.answer, "liquidation_probability": 0.12, "risk_level": "low"}
            llm.then("fenced")
            await _predict(sc)
            assert _val(sc, "fr_ai_risk_probability", calibration="raw", **labels) == pytest.approx(0.12)
            assert _val(sc, "fr_ai_risk_level", base="BTC", horizon="8h", model="fake-gpt", level="low") == 1.0
            assert _val(sc, "fr_ai_risk_level", base="BTC", horizon="8h", model="fake-gpt", level="high") == 0.0
            assert sc.store.prediction_count() == 3
            hist_count = _val(sc, "fr_ai_request_duration_seconds_count", model="fake-gpt")
            assert hist_count == _val(sc, "fr_ai_requests_total", model="fake-gpt")
        finally:
            await sc.close()


async def test_retries_on_5xx_and_429_honour_retry_after(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _btc_state()
        llm.retry_after = "0.3"
        sc = Sidecar(_config(tmp_path, llm.url, exp.url, retries=2))
        try:
            await sc.read_state()
            llm.then("500", "429", "valid")
            started = time.monotonic()
            await _predict(sc)
            assert time.monotonic() - started >= 0.3  # waited the Retry-After
            assert _val(sc, "fr_ai_requests_total", model="fake-gpt") == 3
            assert _val(sc, "fr_ai_request_failures_total", model="fake-gpt", reason="http_error") == 1
            assert _val(sc, "fr_ai_request_failures_total", model="fake-gpt", reason="rate_limited") == 1
            assert _val(
                sc, "fr_ai_risk_probability", base="BTC", calibration="raw", horizon="8h", model="fake-gpt"
            ) == pytest.approx(0.42)
        finally:
            await sc.close()


async def test_long_retry_after_blocks_the_model_without_waiting(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _btc_state()
        llm.retry_after = "30"
        sc = Sidecar(_config(tmp_path, llm.url, exp.url, retries=3, max_backoff_seconds=1.0))
        try:
            await sc.read_state()
            llm.then("429")
            started = time.monotonic()
            await _predict(sc)
            # no retry (one request), and no sleep through the 30 s Retry-After (the bound is far from
            # both it and a loaded machine's scheduling delays)
            assert time.monotonic() - started < 10.0
            assert len(llm.requests) == 1
            await _predict(sc)  # still inside Retry-After: not even asked
            assert len(llm.requests) == 1
            assert _val(sc, "fr_ai_request_failures_total", model="fake-gpt", reason="rate_limited") == 1
        finally:
            await sc.close()


async def test_slow_model_does_not_delay_baseline_or_metrics(tmp_path: Path) -> None:
    async with FakeOpenAI(default_mode="slow") as llm, FakeExporter() as exp:
        exp.state = _btc_state()
        llm.slow_seconds = 30.0  # the model thinks far longer than a loaded machine's scrape takes
        cfg = _config(tmp_path, llm.url, exp.url, timeout_seconds=60.0)
        cfg.sidecar.baseline = True
        cfg.sidecar.event_poll_seconds = 0.05
        sc = Sidecar(cfg)
        stop = asyncio.Event()
        runner = asyncio.create_task(sc.run(stop))
        try:
            host_port = cfg.sidecar.listen_address
            async with httpx.AsyncClient() as client:
                await wait_until(lambda: ("baseline", "BTC", 8.0) in sc.metrics.latest, 5, what="a baseline answer")
                assert ("fake-gpt", "BTC", 8.0) not in sc.metrics.latest  # still thinking
                t0 = time.monotonic()
                resp = await client.get(f"http://{host_port}/metrics")
                assert time.monotonic() - t0 < 15.0  # not held for the model's 30 s
                assert ("fake-gpt", "BTC", 8.0) not in sc.metrics.latest  # answered while the model still thinks
                assert 'fr_ai_risk_probability{base="BTC",calibration="raw",horizon="8h",model="baseline"}' in resp.text
                assert (await client.get(f"http://{host_port}/healthz")).status_code == 200
            # the poll loop keeps running while the slow call is in flight, and no second call piles up
            reads = exp.reads
            await wait_until(lambda: exp.reads > reads, 30, what="another state read")
            assert len(llm.requests) == 1
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)


async def test_threshold_event_triggers_prediction_and_exporter_outage_is_survived(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _btc_state()
        exp.state["events"] = [{"seq": 3, "at": 1.0, "base": "BTC", "kind": "funding", "exchange": "binance"}]
        cfg = _config(tmp_path, llm.url, exp.url)
        cfg.sidecar.interval_seconds = 3600
        cfg.sidecar.event_poll_seconds = 0.05
        sc = Sidecar(cfg)
        stop = asyncio.Event()
        runner = asyncio.create_task(sc.run(stop))

        async def wait_for_requests(n: int) -> None:
            await wait_until(
                lambda: len(llm.requests) >= n and all(t.done() for r in sc.runners for t in r.tasks.values()),
                what=f"{n} model calls, all answered",
            )

        try:
            await wait_for_requests(1)  # the scheduled run at start; old event seq 3 is history
            await asyncio.sleep(0.2)  # a negative check: no second call comes
            assert len(llm.requests) == 1
            exp.state["events"].append({"seq": 4, "at": 2.0, "base": "BTC", "kind": "liquidation"})
            await wait_for_requests(2)
            exp.state["events"].append({"seq": 5, "at": 3.0, "base": "ETH", "kind": "funding"})  # unknown base
            await asyncio.sleep(0.2)  # a negative check: the unknown base starts no call
            assert len(llm.requests) == 2
            exp.fail = True  # exporter down: no crash, the last value stays
            await wait_until(lambda: sc.metrics.state_reads["error"] > 0, 30, what="a failed state read")
            assert ("fake-gpt", "BTC", 8.0) in sc.metrics.latest
            exp.fail = False
            exp.state["events"] = [{"seq": 1, "at": 4.0, "base": "BTC", "kind": "funding"}]  # exporter restarted
            await wait_for_requests(3)
            assert not runner.done()
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)
        assert SECRET not in caplog.text


async def test_calls_in_flight_are_bounded_per_model(tmp_path: Path) -> None:
    async with FakeOpenAI(default_mode="slow") as llm, FakeExporter() as exp:
        llm.slow_seconds = 0.2
        exp.state = state([instrument("binance", f"{b}USDT", b) for b in ("BTC", "ETH", "SOL", "XRP", "DOGE")])
        # the timeout is a guard: the calls queue for their two slots, which takes long on a loaded machine
        sc = Sidecar(_config(tmp_path, llm.url, exp.url, timeout_seconds=30.0, max_concurrency=2))
        try:
            await sc.read_state()
            assert sc.trigger(sc.bases(), "test") == 5
            await sc.wait_idle()
            assert len(llm.requests) == 5 and llm.max_in_flight == 2
            assert {b for (_, b, _h) in sc.metrics.latest} == {"BTC", "ETH", "SOL", "XRP", "DOGE"}
        finally:
            await sc.close()
