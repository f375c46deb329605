"""The sidecar's schedule on a virtual clock: model-wide Retry-After, an interval shorter than the
poll period, several horizons side by side, truncated and two-object answers counted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support import free_port, wait_until
from support.fakes import VALID_ANSWER, FakeExporter, FakeOpenAI, instrument, state

from exporter.clock import VirtualClock
from exporter.config import Config, ModelConfig, SidecarConfig
from exporter.sidecar.main import Sidecar

KEY_ENV = "FR_TEST_LLM_KEY"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-schedule")


def _three_bases() -> dict[str, object]:
    return state(
        [
            instrument("binance", "BTCUSDT"),
            instrument("binance", "ETHUSDT", "ETH", mark=3000.0),
            instrument("binance", "SOLUSDT", "SOL", mark=150.0),
        ]
    )


def _model(url: str, **kw: object) -> ModelConfig:
    m = ModelConfig(
        name="fake-gpt",
        base_url=f"{url}/v1",
        model="gpt-fake",
        api_key_env=KEY_ENV,
        retries=2,
        timeout_seconds=5.0,
        max_backoff_seconds=60.0,
    )
    return m.model_copy(update=kw)


async def test_retry_after_blocks_the_model_for_every_base(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _three_bases()
        llm.retry_after = "30"
        llm.then("429")  # the first call gets a 429 with Retry-After: 30 s
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "p.sqlite",
                baseline=False,
                models=[_model(llm.url)],
            )
        )
        sc = Sidecar(cfg, clock=clock)
        try:
            await sc.read_state()
            assert sc.trigger(["BTC"], "test") == 1
            await wait_until(lambda: len(llm.requests) == 1 and clock.pending() == 1, what="the 429 and its wait")
            # ETH and SOL are asked while the model is blocked: they wait for the same Retry-After
            assert sc.trigger(["ETH", "SOL"], "test") == 2
            await wait_until(lambda: clock.pending() == 3, what="all three calls waiting")
            assert len(llm.requests) == 1  # nothing was sent for ETH or SOL
            clock.advance(29.0)
            assert clock.pending() == 3 and len(llm.requests) == 1  # still all waiting
            clock.advance(1.0)
            await wait_until(lambda: len(sc.metrics.latest) == 3, what="all three answers")
            assert len(llm.requests) == 4
            assert {b for (_, b, _h) in sc.metrics.latest} == {"BTC", "ETH", "SOL"}
            assert (
                sc.registry.get_sample_value(
                    "fr_ai_request_failures_total", {"model": "fake-gpt", "reason": "rate_limited"}
                )
                == 1
            )
        finally:
            await sc.close()


async def test_long_retry_after_skips_every_base_until_it_passes(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _three_bases()
        llm.retry_after = "600"
        llm.then("429")
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "p.sqlite",
                baseline=False,
                models=[_model(llm.url, max_backoff_seconds=60.0)],
            )
        )
        sc = Sidecar(cfg, clock=clock)
        try:
            await sc.read_state()
            sc.trigger(["BTC"], "test")
            await sc.wait_idle()
            assert len(llm.requests) == 1 and not sc.metrics.latest
            assert sc.trigger(["BTC", "ETH", "SOL"], "test") == 0  # blocked: no task at all
            clock.advance(600.0)
            assert sc.trigger(["BTC", "ETH", "SOL"], "test") == 3
            await sc.wait_idle()
            assert len(llm.requests) == 4 and len(sc.metrics.latest) == 3
        finally:
            await sc.close()


async def test_interval_shorter_than_poll_period_and_several_horizons(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with FakeExporter() as exp:
        exp.state = state([instrument("binance", "BTCUSDT")])
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "p.sqlite",
                interval_seconds=2.0,
                event_poll_seconds=60.0,
                horizons_hours=[0.25, 4.0, 8.0],
            )
        )
        sc = Sidecar(cfg, clock=clock)
        stop = asyncio.Event()
        runner = asyncio.create_task(sc.run(stop))
        try:
            await wait_until(lambda: sc.metrics.requests["baseline"] == 3, what="the first run (three horizons)")
            for k in range(2, 11):  # 20 s of virtual time: ten schedule runs, still one poll
                clock.advance(2.0)
                await wait_until(lambda k=k: sc.metrics.requests["baseline"] == 3 * k, what=f"schedule run {k}")
            assert sc.metrics.state_reads["ok"] == 1
            horizons = {pub.horizon for (_, _, _h), pub in sc.metrics.latest.items()}
            assert horizons == {"15m", "4h", "8h"}
            probs = {h: sc.metrics.latest[("baseline", "BTC", h)].answer.liquidation_probability for h in (0.25, 4, 8)}
            assert probs[0.25] < probs[4] < probs[8]
            text = await asyncio.to_thread(_scrape, cfg.sidecar.listen_address)
            assert 'fr_ai_risk_probability{base="BTC",calibration="raw",horizon="15m",model="baseline"}' in text
        finally:
            stop.set()
            await asyncio.wait_for(runner, 30)


def _scrape(listen: str) -> str:
    import httpx

    return httpx.get(f"http://{listen}/metrics", timeout=5).text


async def test_two_objects_and_truncation_are_counted(tmp_path: Path) -> None:
    async with FakeOpenAI() as llm, FakeExporter() as exp:
        exp.state = _three_bases()
        cfg = Config(
            sidecar=SidecarConfig(
                exporter_url=exp.url,
                listen_address=f"127.0.0.1:{free_port()}",
                db_path=tmp_path / "p.sqlite",
                baseline=False,
                models=[_model(llm.url, retries=0)],
            )
        )
        two = json.dumps(VALID_ANSWER) + "\n" + json.dumps({**VALID_ANSWER, "liquidation_probability": 0.9})
        long = json.dumps({**VALID_ANSWER, "reasoning": "x" * 10_000})
        llm.content_script = [two, long]
        sc = Sidecar(cfg)
        try:
            await sc.read_state()
            for base in ("BTC", "ETH"):
                llm.then("content")
                sc.trigger([base], "test")
                await sc.wait_idle()
            get = sc.registry.get_sample_value
            assert get("fr_ai_request_failures_total", {"model": "fake-gpt", "reason": "multiple_objects"}) == 1
            assert get("fr_ai_answer_truncations_total", {"model": "fake-gpt", "field": "reasoning"}) == 1
            kept = [k for k in sc.metrics.latest]
            assert len(kept) == 1  # the truncated answer kept its probability; the two-object one is dropped
            assert sc.metrics.latest[kept[0]].answer.liquidation_probability == 0.42
        finally:
            await sc.close()
