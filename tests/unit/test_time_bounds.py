"""Every time bound of the runner, in process, against its contract plus a small margin.

docs/http.md and the settings fix these bounds: a queued request waits at most
``max_wait`` (503 ``concurrency``), a guest runs at most ``limits.timeout`` (504),
a connection must deliver its request head within ``head_timeout`` and its body
within ``body_timeout`` (408, closed).  Each test measures on an idle event loop in
this process, never "how slow was the machine once": the margin is scheduling slack,
small next to the bound, so a bound off by half of itself fails.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from edge_runner.errors import GuestTimeout, Unavailable
from edge_runner.http.fastpath import fast_path_protocol
from edge_runner.http.guard import HttpLimits, guarded_protocol
from edge_runner.http.problems import Problem
from edge_runner.invoke.policy import InlinePolicy, QueuePolicy
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.inprocess import Pools, body_of, failure

#: Scheduling slack on an idle event loop.
MARGIN = 0.25


# -- the queue --------------------------------------------------------------------------


def test_a_request_queued_behind_a_busy_function_gets_503_at_max_wait(pools: Pools) -> None:
    max_wait = 0.5
    runtime = pools.runtime(guests.busy_wat(1500), limits={"timeout": "10s"},
                            pool={"maxInstances": 1}, inline=InlinePolicy(budget=0),
                            queue=QueuePolicy(max_waiting=4, max_wait=max_wait))

    async def scenario() -> float:
        first = asyncio.ensure_future(body_of(runtime))
        await asyncio.sleep(0)  # it holds the only slot for 1.5 s
        started = time.monotonic()
        refused = await failure(runtime)
        waited = time.monotonic() - started
        assert isinstance(refused, Unavailable) and refused.reason == "concurrency"
        first.cancel()
        return waited

    waited = asyncio.run(scenario())
    assert max_wait - 1e-3 <= waited <= max_wait + MARGIN, waited


# -- the guest's deadline -----------------------------------------------------------------


@pytest.mark.parametrize("seconds", [0.001, 0.05, 0.2, 1.0, 2.5, 30.0])
def test_a_deadline_in_ticks_is_the_timeout_and_at_most_two_ticks_more(
    engine: WasmEngine, seconds: float
) -> None:
    """The deadline counts from the current epoch, already partly over: ``ticks``
    ticks last between ``(ticks - 1) * tick`` and ``ticks * tick``."""
    ticks = engine.deadline_ticks(seconds)
    assert (ticks - 1) * engine.tick >= seconds - 1e-9
    assert ticks * engine.tick <= max(seconds, engine.tick) + 2 * engine.tick + 1e-9


ENDLESS = {"edge": guests.endless_wat(), "wagi": guests.wagi_wat("(loop $l (br $l))")}


@pytest.mark.parametrize("abi", ["edge", "wagi"])
@pytest.mark.parametrize("timeout", [0.2, 0.6])
def test_an_endless_guest_is_stopped_at_its_timeout(pools: Pools, abi: str, timeout: float
                                                    ) -> None:
    """edge: inline first (stopped at the inline cap), then on a thread with what is
    left; wagi: on a thread."""
    runtime = pools.runtime(ENDLESS[abi], abi=abi,
                            limits={"timeout": f"{int(timeout * 1000)}ms"})

    async def timed() -> float:
        started = time.monotonic()
        error = await failure(runtime)
        assert isinstance(error, GuestTimeout) and error.reason == "timeout", error
        return time.monotonic() - started

    # Never early; the best of three (noise only adds) within 10 % or 50 ms.
    samples = [asyncio.run(timed()) for _ in range(3)]
    assert min(samples) >= timeout, samples
    assert min(samples) <= timeout + max(0.1 * timeout, 0.05), samples


# -- the request head and body --------------------------------------------------------------


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _answer_now(scope: Any) -> Problem:
    """The fast path's answer for every request (what DataPlane.answer_now returns)."""
    return 200, [(b"content-length", b"2")], b"ok"


async def _serve(limits: HttpLimits, *, fast: bool = False, keep_alive: float = 5
                 ) -> tuple[asyncio.Server, int]:
    """The runner's guarded HTTP protocol (``fast``: with the data port's fast path) on a
    loopback port of this event loop."""
    protocol_class = fast_path_protocol(limits, _answer_now) if fast else guarded_protocol(limits)
    config = uvicorn.Config(_app, lifespan="off", log_config=None, access_log=False,
                            http=protocol_class, timeout_keep_alive=keep_alive)  # type: ignore[arg-type]
    config.load()
    state = ServerState()
    loop = asyncio.get_running_loop()
    protocol: Any = config.http_protocol_class  # a guarded_protocol() class
    server = await loop.create_server(
        lambda: protocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0)
    return server, int(server.sockets[0].getsockname()[1])


async def _closed_after(limits: HttpLimits, sent: bytes, *, trickle: bool = False
                        ) -> tuple[float, bytes]:
    """Seconds from connecting until the server closed the connection, and what it sent."""
    server, port = await _serve(limits)
    try:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if trickle:  # a slowloris client: one byte every 50 ms, never a whole head
            async def drip() -> None:
                for byte in sent:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)
            dripping = asyncio.ensure_future(drip())
        else:
            writer.write(sent)
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        elapsed = time.monotonic() - started
        if trickle:
            dripping.cancel()
        writer.close()
        return elapsed, answer
    finally:
        server.close()


LIMITS = HttpLimits(max_head_bytes=32768, max_headers=100, head_timeout=0.5, body_timeout=0.6)
#: uvloop's and asyncio's timers may fire up to a millisecond early.
EARLY = 0.01


@pytest.mark.parametrize(("sent", "trickle"), [
    (b"", False),
    (b"GET / HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 400 + b"\r\n\r\n", True),
], ids=["idle", "slowloris"])
def test_a_request_head_must_arrive_within_head_timeout(sent: bytes, trickle: bool) -> None:
    elapsed, answer = asyncio.run(_closed_after(LIMITS, sent, trickle=trickle))
    assert LIMITS.head_timeout - EARLY <= elapsed <= LIMITS.head_timeout + MARGIN, elapsed
    if sent:
        assert answer.startswith(b"HTTP/1.1 408 "), answer
    else:
        assert answer == b""  # nothing asked, nothing answered: only closed


def test_a_request_body_must_arrive_within_body_timeout() -> None:
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789"
    elapsed, answer = asyncio.run(_closed_after(LIMITS, head))
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert LIMITS.body_timeout - EARLY <= elapsed <= LIMITS.body_timeout + MARGIN, elapsed


def test_a_keep_alive_connection_gets_head_timeout_again_for_its_next_request() -> None:
    async def scenario() -> tuple[float, bytes]:
        server, port = await _serve(LIMITS)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            first = await reader.readuntil(b"ok")
            assert first.startswith(b"HTTP/1.1 200 ")
            await asyncio.sleep(LIMITS.head_timeout)  # idle in between: not counted
            started = time.monotonic()
            writer.write(b"GET / HTTP/1.1\r\nhost")  # the next head begins, never ends
            answer = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            return time.monotonic() - started, answer
        finally:
            server.close()

    elapsed, answer = asyncio.run(scenario())
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert LIMITS.head_timeout - EARLY <= elapsed <= LIMITS.head_timeout + MARGIN, elapsed


KEEP_ALIVE = 0.6


@pytest.mark.parametrize("fast", [False, True], ids=["asgi", "fast-path"])
@pytest.mark.parametrize("requests", [1, 5])
def test_an_idle_keep_alive_connection_is_closed_keep_alive_after_its_last_answer(
        fast: bool, requests: int) -> None:
    """With several requests KEEP_ALIVE/2 apart the connection stays open (the fast
    path's lazy timer re-arms itself) and closes KEEP_ALIVE after the last answer."""
    async def scenario() -> tuple[float, bytes]:
        server, port = await _serve(LIMITS, fast=fast, keep_alive=KEEP_ALIVE)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for index in range(requests):
                if index:
                    await asyncio.sleep(KEEP_ALIVE / 2)
                writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                answer = await asyncio.wait_for(reader.readuntil(b"ok"), timeout=10)
                assert answer.startswith(b"HTTP/1.1 200 "), answer
            answered = time.monotonic()
            rest = await asyncio.wait_for(reader.read(), timeout=10)  # b"" once closed
            writer.close()
            return time.monotonic() - answered, rest
        finally:
            server.close()

    elapsed, rest = asyncio.run(scenario())
    assert rest == b""
    assert KEEP_ALIVE - EARLY <= elapsed <= KEEP_ALIVE + MARGIN, elapsed
