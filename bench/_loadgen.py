"""A small closed-loop HTTP/1.1 load generator (asyncio streams, keep-alive, uvloop if present).

    python bench/_loadgen.py --url http://127.0.0.1:8000 --path /v1/exports/exp_x \
        --header "Authorization: Bearer k" --concurrency 50 --seconds 10

Each of ``--concurrency`` connections sends one request, reads the whole answer, then sends
the next. Requests cycle through ``--path`` values (several allowed); a ``--body`` may hold
``{n}``, replaced by a per-request counter (distinct bodies). It runs in its own process so
that the server under test and the load generator never share a GIL, and is much lighter
than an httpx client (which would limit the figures on a small machine). It prints one JSON
object: requests, errors, status counts, req/s, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from urllib.parse import urlsplit


def percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


async def one_connection(
    host: str,
    port: int,
    requests: itertools.cycle[bytes],
    counter: itertools.count[int],
    body_template: str | None,
    head: str,
    stop_at: float,
    record_from: float,
    latencies: list[float],
    statuses: Counter[int],
    errors: Counter[str],
    sent: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            if body_template is None:
                payload = next(requests)
            else:
                path = next(requests).decode()
                body = body_template.replace("{n}", str(next(counter))).encode()
                payload = (
                    head.replace("{path}", path).replace("{length}", str(len(body))).encode() + body
                )
            started = time.perf_counter()
            writer.write(payload)
            status_line = await reader.readuntil(b"\r\n")
            status = int(status_line.split(b" ", 2)[1])
            length = 0
            chunked = False
            while True:
                line = await reader.readuntil(b"\r\n")
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value.strip())
                elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await reader.readexactly(length)
            finished = time.perf_counter()
            sent[0] += 1
            if started >= record_from:
                latencies.append(finished - started)
                statuses[status] += 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        errors[type(exc).__name__] += 1
    finally:
        writer.close()


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    parts = urlsplit(args.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = "".join(f"{h}\r\n" for h in args.header)
    method = args.method.upper()
    if args.body is None:
        raw = [
            f"{method} {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}\r\n".encode()
            for p in args.path
        ]
        head = ""
    else:
        raw = [p.encode() for p in args.path]
        head = (
            f"{method} {{path}} HTTP/1.1\r\nHost: {host}:{port}\r\n{headers}"
            "Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    requests = itertools.cycle(raw)
    counter = itertools.count(args.counter_start)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    sent = [0]
    began = time.perf_counter()
    record_from = began + args.warmup
    stop_at = record_from + args.seconds
    await asyncio.gather(
        *(
            one_connection(
                host,
                port,
                requests,
                counter,
                args.body,
                head,
                stop_at,
                record_from,
                latencies,
                statuses,
                errors,
                sent,
            )
            for _ in range(args.concurrency)
        )
    )
    measured = time.perf_counter() - record_from
    latencies.sort()
    return {
        "requests": len(latencies),
        "requests_with_warmup": sent[0],
        "seconds": round(measured, 3),
        "rps": round(len(latencies) / measured, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--path", action="append", required=True)
    parser.add_argument("--method", default="GET")
    parser.add_argument("--body", help="request body; {n} becomes a per-request counter")
    parser.add_argument("--counter-start", type=int, default=0)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=1)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
    else:
        result = uvloop.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
