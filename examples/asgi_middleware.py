"""A plain ASGI middleware that answers 429 with RateLimit headers.

It works under any ASGI server or framework (uvicorn, Starlette, FastAPI, ...). To
stay runnable with only redis and anyio installed, main() plays the server: it
calls the app with hand-made scope/receive/send and prints the responses.

Run: REDIS_URL=redis://localhost:6379/0 python examples/asgi_middleware.py
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

import aioredis_patterns
from aioredis_patterns import AsyncRateLimiter

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def client_ip(scope: Scope) -> str:
    """Limit per client address (behind a proxy, use the forwarded address instead)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RateLimitMiddleware:
    """Answers 429 Too Many Requests when *limiter* denies the caller.

    Admitted responses get the RateLimit-* headers too, so clients can pace
    themselves before they hit the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: AsyncRateLimiter,
        *,
        key: Callable[[Scope], str] = client_ip,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # If Redis is down this raises and the server answers 500: failing closed.
        # Catch redis.exceptions.ConnectionError here to fail open instead.
        result = await self.limiter.allow(self.key(scope))
        headers = [(k.lower().encode(), v.encode()) for k, v in result.headers().items()]
        if not result.allowed:
            await send(
                {
                    "type": "http.response.start",
                    "status": 429,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), *headers],
                }
            )
            await send({"type": "http.response.body", "body": b"Too Many Requests\n"})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *headers]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """The application being protected."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello\n"})


async def request(app: ASGIApp, ip: str) -> tuple[int, dict[str, str]]:
    """One GET / from *ip*, the way an ASGI server would make it; status and headers."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"host", b"example.test")],
        "client": (ip, 50000),
        "server": ("example.test", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


async def main() -> None:
    client = await aioredis_patterns.connect(
        os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    # In a real app this block is the lifespan: many requests run at once, and
    # autopipeline() lets their rate-limit checks share round trips.
    async with aioredis_patterns.autopipeline(client) as redis:
        limiter = AsyncRateLimiter(redis, limit=3, window=10.0, prefix="example:asgi:")
        app = RateLimitMiddleware(hello, limiter)
        try:
            for i in range(4):
                status, headers = await request(app, "203.0.113.7")
                print(f"request {i + 1} from 203.0.113.7: {status}")
                for name, value in headers.items():
                    print(f"    {name}: {value}")
            status, _ = await request(app, "198.51.100.2")
            print(f"another client meanwhile: {status}")
        finally:
            await limiter.reset("203.0.113.7")
            await limiter.reset("198.51.100.2")
    await client.aclose()


if __name__ == "__main__":
    anyio.run(main)
