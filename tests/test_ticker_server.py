"""The local Kite ticker server against the real ``kiteconnect.KiteTicker`` (never mocked).

Every test drives the real client (autobahn on the one Twisted reactor of the test process,
see tests/kite_ticker_server.py) and checks what its own ``_parse_binary`` made of the
frames, and what the server recorded of the client's messages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from kite_ticker_server import (
    KiteTickerServer,
    LiveTicker,
    ReactorThread,
    ScriptTick,
    divisor,
    encode_packet,
    expected_tick,
)

NIFTY, RELIANCE, NFO_FUT = 256265, 738561, 12803586  # segments 9 (indices), 1 (NSE), 2 (NFO)
CDS, BCD, NCO, MCX = (1234 << 8) | 3, (77 << 8) | 6, (88 << 8) | 12, (99 << 8) | 7
T0 = 1717386900  # 2024-06-03 09:25:00 IST


def _ticks(tokens: list[int], ts: int = T0) -> list[ScriptTick]:
    """One tick per token, fields far from zero and distinct, some near the uint32 limit."""
    out = []
    for i, token in enumerate(tokens):
        out.append(
            ScriptTick(
                token,
                ts + i,
                2_245_535 + i,
                volume=4_000_000_000 + i,
                last_qty=75 + i,
                avg_price=2_244_010,
                buy_qty=123_456,
                sell_qty=654_321,
                day_open=2_240_000,
                day_high=2_250_005,
                day_low=2_230_010,
                prev_close=2_235_000 if i % 2 else 0,
                oi=9_876_543,
                oi_high=9_900_000,
                oi_low=9_800_000,
                last_trade_ts=ts + i - 3,
            )
        )
    return out


def test_handshake_carries_key_token_and_version_and_the_client_subscribes(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY, RELIANCE]):
        ticker_server.wait_subscribed([NIFTY, RELIANCE], "full")
        hs = ticker_server.handshakes[0]
        assert hs.accepted and hs.query == {"api_key": "test_api_key", "access_token": "test_access_token"}
        assert hs.headers["x-kite-version"] == "3"
        assert [m for _, m in ticker_server.messages] == [
            {"a": "subscribe", "v": [NIFTY, RELIANCE]},
            {"a": "mode", "v": ["full", [NIFTY, RELIANCE]]},
        ]


@pytest.mark.parametrize("mode", ["ltp", "quote", "full"])
def test_every_packet_kind_parses_as_scripted(ticker_server: KiteTickerServer, mode: str) -> None:
    tokens = [NIFTY, RELIANCE, NFO_FUT, CDS, BCD, NCO, MCX]
    ticks = _ticks(tokens)
    sizes = {len(encode_packet(t, mode)) for t in ticks}
    assert sizes == {"ltp": {8}, "quote": {28, 44}, "full": {32, 184}}[mode]
    with LiveTicker(ticker_server, tokens, mode=mode) as client:
        ticker_server.wait_subscribed(tokens, mode)
        assert ticker_server.send(ticks) == len(ticks)
        got = client.wait_ticks(len(ticks))
    assert got == [expected_tick(t, mode) for t in ticks]
    # the divisors the client applies, segment by segment
    assert [g["last_price"] for g in got] == [
        t.price / d for t, d in zip(ticks, (100, 100, 100, 1e7, 1e4, 1e4, 100), strict=True)
    ]
    if mode == "full":
        assert [g["exchange_timestamp"].timestamp() for g in got] == [t.ts for t in ticks]
        assert "volume_traded" not in got[0] and got[1]["volume_traded"] == 4_000_000_001


def test_frames_split_anyhow_arrive_whole_and_in_order(ticker_server: KiteTickerServer) -> None:
    tokens = [NIFTY, RELIANCE]
    with LiveTicker(ticker_server, tokens) as client:
        ticker_server.wait_subscribed(tokens)

        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(n=st.integers(1, 40), split=st.lists(st.integers(1, 12), max_size=8))
        def check(n: int, split: list[int]) -> None:
            before = len(client.ticks)
            ticks = [
                ScriptTick(tokens[i % 2], T0 + i, 100_000 + i, None if i % 2 == 0 else 10 * i + 1) for i in range(n)
            ]
            assert ticker_server.send(ticks, split) == n
            got = client.wait_ticks(before + n)[before:]
            assert got == [expected_tick(t, "full") for t in ticks]

        check()


def test_heartbeats_reach_on_message_only(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        for _ in range(3):
            ticker_server.heartbeat()
        ticker_server.send(_ticks([NIFTY]))
        client.wait_ticks(1)  # TCP keeps the order: the heartbeats came first
        assert [p for p, binary in client.messages if binary and len(p) == 1] == [b"\x00"] * 3
        assert len(client.ticks) == 1


def test_text_messages_order_updates_and_errors(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [RELIANCE]) as client:
        ticker_server.wait_subscribed([RELIANCE])
        ticker_server.order_update({"order_id": "1", "status": "COMPLETE"})
        ticker_server.error("a warning")
        client.wait_for(lambda: bool(client.orders) and client.count("error") >= 1)
        assert client.orders == [{"order_id": "1", "status": "COMPLETE"}]
        assert ("error", 0, "a warning") in client.events
        assert client.is_connected() and client.count("close") == 0


def test_a_rejected_token_at_connect_is_a_403_and_the_client_retries(ticker_server: KiteTickerServer) -> None:
    ticker_server.reject = True
    with LiveTicker(ticker_server, [NIFTY]) as client:
        client.wait_event("close")
        assert not ticker_server.handshakes[0].accepted
        assert client.events[0][:2] == ("error", 1006) and client.events[1][:2] == ("close", 1006)
        assert "403 - Forbidden" in client.events[0][2]
        assert client.count("connect") == 0
        ticker_server.reject = False  # the token is good again: the client's own retry gets in
        client.wait_event("connect")
        ticker_server.wait_subscribed([NIFTY])
        # (the client calls on_reconnect only from its second retry on: its counter starts at 0)
        assert [h.accepted for h in ticker_server.handshakes] == [False, True]


def test_a_wrong_access_token_is_refused(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY], access_token="stale") as client:
        client.wait_event("close")
        assert ticker_server.handshakes[0].query["access_token"] == "stale"
        assert not ticker_server.handshakes[0].accepted and not ticker_server.live()


def test_a_token_rejected_mid_session(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        ticker_server.kick("Token expired")
        client.wait_event("close")
        assert ("error", 0, "Token expired") in client.events
        # the client retries by itself, and is refused from now on
        ticker_server.wait_for(lambda: len(ticker_server.handshakes) >= 2, what="a retry")
        assert not ticker_server.handshakes[-1].accepted


def test_a_dropped_connection_reconnects_and_resubscribes(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY, RELIANCE]) as client:
        ticker_server.wait_subscribed([NIFTY, RELIANCE])
        ticker_server.drop()
        client.wait_event("connect", 2)
        ticker_server.wait_subscribed([NIFTY, RELIANCE])
        assert client.events[1][:2] == ("error", 1006) and len(ticker_server.handshakes) == 2
        # on the new connection: our on_connect's subscribe + mode, then the client's own
        # resubscribe() (subscribe, then mode) from its on_open
        second = [m for n, m in ticker_server.messages if n == 1]
        assert second[0] == {"a": "subscribe", "v": [NIFTY, RELIANCE]}
        assert {"a": "mode", "v": ["full", [NIFTY, RELIANCE]]} in second
        ticker_server.send(_ticks([RELIANCE]))
        assert client.wait_ticks(1)[0]["instrument_token"] == RELIANCE


def test_a_server_restart_on_the_same_port(ticker_server: KiteTickerServer) -> None:
    port = ticker_server.port
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        ticker_server.restart()
        assert ticker_server.port == port
        client.wait_event("connect", 2)
        ticker_server.wait_subscribed([NIFTY])
        ticker_server.send(_ticks([NIFTY]))
        assert client.wait_ticks(1)[0]["instrument_token"] == NIFTY


def test_unsubscribe_and_mode_change_are_recorded_and_obeyed(ticker_server: KiteTickerServer) -> None:
    with LiveTicker(ticker_server, [NIFTY, RELIANCE]) as client:
        ticker_server.wait_subscribed([NIFTY, RELIANCE])
        ReactorThread.call(client.kt.unsubscribe, [NIFTY])
        ReactorThread.call(client.kt.set_mode, "ltp", [RELIANCE])
        ticker_server.wait_for(lambda: ticker_server.subscriptions() == {RELIANCE: "ltp"}, what="unsubscribe + mode")
        assert ticker_server.send(_ticks([NIFTY, RELIANCE])) == 1
        assert client.wait_ticks(1) == [expected_tick(_ticks([NIFTY, RELIANCE])[1], "ltp")]


def test_the_fake_clock_paces_the_script(ticker_server: KiteTickerServer) -> None:
    script = [ScriptTick(NIFTY, T0 + s, 2_245_500 + s) for s in (0, 1, 30, 95)]
    ticker_server.load(script)
    with LiveTicker(ticker_server, [NIFTY]) as client:
        ticker_server.wait_subscribed([NIFTY])
        assert ticker_server.advance(T0 + 30) == 3
        got = client.wait_ticks(3)
        assert [g["exchange_timestamp"].timestamp() for g in got] == [T0, T0 + 1, T0 + 30]
        beats = sum(1 for p, _ in client.messages if len(p) == 1)
        assert ticker_server.remaining == 1
        ticker_server.advance(T0 + 100)
        client.wait_ticks(4)
        # one heartbeat per fake second without a tick: 31..94 and 96..100
        client.wait_for(lambda: sum(1 for p, _ in client.messages if len(p) == 1) == beats + 64 + 5)


CHILD = r"""
import json, sys
from kiteconnect import KiteTicker

url, want = sys.argv[1], int(sys.argv[2])
kt = KiteTicker("test_api_key", "test_access_token", root=url)
got = []

def on_connect(ws, response):
    ws.subscribe([256265])
    ws.set_mode(ws.MODE_FULL, [256265])

def on_ticks(ws, ticks):
    got.extend(ticks)
    if len(got) >= want:
        print(json.dumps([[t["last_price"], t["exchange_timestamp"].timestamp()] for t in got]), flush=True)
        ws.stop_retry()
        ws.stop()

kt.on_connect = on_connect
kt.on_ticks = on_ticks
kt.connect()  # blocks: this process owns its reactor
"""


def test_client_in_its_own_process(ticker_server: KiteTickerServer, tmp_path: Path) -> None:
    """How a program that runs its own reactor (mde stream) is tested: in a subprocess."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "TZ": "America/New_York"}  # the naive-local timestamps still round-trip
    child = subprocess.Popen(
        [sys.executable, str(script), ticker_server.url, "3"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        ticker_server.wait_subscribed([NIFTY], timeout=30)
        ticks = [ScriptTick(NIFTY, T0 + i, 2_245_500 + 5 * i) for i in range(3)]
        ticker_server.send(ticks, [1, 2])
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert json.loads(out) == [[t.price / divisor(NIFTY), t.ts] for t in ticks]
