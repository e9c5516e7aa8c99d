"""Fault 6: bad input at volume: zero 5xx.

    .venv/bin/python bench/faults/bad_input.py [--examples 2000] [--schemathesis-examples 100]

Two generators hit a running API (with a worker, against the sandbox):

1. hypothesis, ``--examples`` requests: arbitrary JSON (and non-JSON bytes) as the body of
   ``POST /v1/exports``, request-shaped objects with wrong types, huge or odd values, random
   ``Idempotency-Key`` and ``Content-Type`` headers; ``GET``/``DELETE`` on random export ids;
   random query strings on the list route; random ``Authorization`` headers.
2. schemathesis (its CLI) over the OpenAPI document, every operation, check
   ``not_a_server_error``.

Expected: no answer with status 500 or above, and the API process still alive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench._common import API_KEY, AUTH, print_machine, private_run

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
ODD_TEXT = st.text(max_size=300) | st.sampled_from(
    [
        "",
        " ",
        "and",
        "created_time>=",
        "==",
        "a==b and",
        "x" * 5000,
        "\x00",
        "é==ü",
        "__reject__==1",
    ]
)
REQUEST_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "filter": ODD_TEXT | JSON,
        "fields": st.lists(ODD_TEXT, max_size=8) | JSON,
        "site_id": st.integers(min_value=-(2**70), max_value=2**70) | JSON,
        "callback_url": st.sampled_from(
            [
                "http://169.254.169.254/latest",
                "ftp://x",
                "http://",
                "https://example.invalid/h",
                "http://127.0.0.1:1/x",
                "not a url",
                "http://[::1]/",
            ]
        )
        | ODD_TEXT,
        "metadata": JSON,
        "max_age_seconds": st.integers(min_value=-(2**80), max_value=2**80) | JSON,
        "unknown": JSON,
    },
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--schemathesis-examples", type=int, default=100)
    args = parser.parse_args()
    print_machine()
    print(
        f"bad input: {args.examples} hypothesis requests, schemathesis "
        f"{args.schemathesis_examples} examples per operation",
        flush=True,
    )
    seen: dict[int, int] = {}
    server_errors: list[str] = []
    started = time.monotonic()
    with private_run({"task_seconds": 1}) as run:
        api = run.procs.api()
        run.procs.worker()
        client = httpx.Client(base_url=api, timeout=30)

        broken: list[str] = []
        unsendable = [0]

        def send(what: str, method: str, url: str, **kwargs: Any) -> None:
            """One request; a malformed or cut answer is a finding, not a crash."""
            try:
                response = client.request(method, url, **kwargs)
            except httpx.LocalProtocolError:
                unsendable[0] += 1  # the client refused to send it (e.g. a header with edge
                return  # spaces): nothing reached the API
            except httpx.HTTPError as exc:
                broken.append(f"{type(exc).__name__} on {what}: {exc}"[:300])
                return
            note(response, what)

        def note(response: httpx.Response, what: str) -> None:
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                server_errors.append(f"{response.status_code} {what}: {response.text[:200]}")

        @settings(
            max_examples=args.examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(data=st.data())
        def hammer(data: st.DataObject) -> None:
            kind = data.draw(st.sampled_from(["body", "raw", "get", "list", "auth"]))
            headers = dict(AUTH)
            if data.draw(st.booleans()):
                headers["Idempotency-Key"] = data.draw(
                    st.text(
                        alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300
                    )
                )
            if kind == "body":
                body: Any = data.draw(REQUEST_LIKE | JSON)
                send(f"POST {json.dumps(body)[:200]}", "POST", "/v1/exports", json=body,
                     headers=headers)  # fmt: skip
            elif kind == "raw":
                raw = data.draw(st.binary(max_size=2000))
                headers["Content-Type"] = data.draw(
                    st.sampled_from(
                        ["application/json", "text/plain", "application/x-www-form-urlencoded", ""]
                    )
                )
                send(f"POST raw {raw[:80]!r} as {headers['Content-Type']!r}", "POST",
                     "/v1/exports", content=raw, headers=headers)  # fmt: skip
            elif kind == "get":
                export_id = data.draw(st.text(max_size=60) | st.just("exp_" + "A" * 22))
                method = data.draw(st.sampled_from(["GET", "DELETE"]))
                suffix = data.draw(st.sampled_from(["", "/csv", "/deliveries"]))
                path = f"/v1/exports/{quote(export_id, safe='')}{suffix}"
                send(f"{method} {path!r}", method, path, headers=headers)
            elif kind == "list":
                params = data.draw(
                    st.dictionaries(
                        st.sampled_from(["status", "limit", "cursor", "x"]), ODD_TEXT, max_size=3
                    )
                )
                send(f"GET /v1/exports {params}", "GET", "/v1/exports", params=params,
                     headers=headers)  # fmt: skip
            else:
                value = data.draw(
                    st.text(
                        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=100
                    )
                )
                send(f"GET /v1/exports Authorization {value!r}", "GET", "/v1/exports",
                     headers={"Authorization": value})  # fmt: skip

        hammer()
        hypothesis_seconds = time.monotonic() - started
        schemathesis = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"), "run", f"{api}/openapi.json",
                "--checks", "not_a_server_error", "-H", f"Authorization: Bearer {API_KEY}",
                "--max-examples", str(args.schemathesis_examples), "--workers", "1",
                "--request-timeout", "30", "--generation-database", "none",
            ],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        alive = run.procs.servers[api].poll() is None
        client.close()
    tail = "\n".join(schemathesis.stdout.strip().splitlines()[-12:])
    print("results:")
    print(f"  hypothesis requests: {sum(seen.values())} in {hypothesis_seconds:.0f} s")
    print(f"  statuses: {dict(sorted(seen.items()))}")
    print(f"  5xx from hypothesis: {len(server_errors)}")
    print(f"  not sendable by the HTTP client (skipped): {unsendable[0]}")
    for line in server_errors[:10]:
        print(f"    {line}")
    print(f"  schemathesis exit code: {schemathesis.returncode}; its summary:")
    print("    " + tail.replace("\n", "\n    "))
    print(f"  malformed or cut answers: {len(broken)}")
    for line in broken[:5]:
        print(f"    {line}")
    print(f"  API process alive: {alive}")
    ok = not server_errors and not broken and schemathesis.returncode == 0 and alive
    print(f"verdict: {'PASS' if ok else 'FAIL'}")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
