"""Updates contacts through Microsoft's Python Dataverse SDK (PowerPlatform-Dataverse-Client, from PyPI) the way
its users write many records, for the write-strategies benchmark (crates/dataverse/benches/strategies.rs).

Each of --callers threads has its own DataverseClient (one requests.Session each) and calls
`client.records.update("contact", ids, changes)` with --per-call ids and one change per id — which the SDK sends
as one `UpdateMultiple` request — one call after another, taking the next chunk of ids as it goes. No call
starts after --seconds; calls already started are waited for. The SDK itself retries only network errors: an
HTTP 429 (or 502/503/504) reaches the caller as `HttpError` with `is_transient` and the `Retry-After` seconds in
`details["retry_after"]`, so each caller does what Microsoft's guidance asks of SDK users: waits that long and
makes the same call again (at most --attempts times, then the chunk counts as not written).

The contact with line number i (from 0) in --ids gets jobtitle "<prefix>-<i>".

Sign-in is azure-identity's ClientSecretCredential (the SDK takes any azure-core TokenCredential) with only the
authority changed, as for a real tenant, from DATAVERSE_TENANT_ID, DATAVERSE_CLIENT_ID and
DATAVERSE_CLIENT_SECRET. The SDK refuses a base URL that is not https://, so the emulator must serve TLS
(`--tls FILE`, or `EmulatorConfig::tls_certificate`) and REQUESTS_CA_BUNDLE must name its certificate, as a user
trusts a company's own CA; nothing in the SDK is changed.

Requests and 429s are counted from the HTTP responses themselves: every Web API request (a URL with
"/api/data/") that goes through requests' HTTPAdapter.send, which the SDK's session and every retry use.

    DATAVERSE_TENANT_ID=… DATAVERSE_CLIENT_ID=… DATAVERSE_CLIENT_SECRET=… REQUESTS_CA_BUNDLE=emulator.pem \\
    bench/.venv/bin/python bench/dataverse_sdk.py --url https://127.0.0.1:PORT --ids ids.txt \\
        --callers 16 --per-call 1000 --seconds 60 --prefix sdk-16

Prints one JSON line: records acknowledged, the chunks acknowledged ([first line, count] pairs), calls, failed
calls, requests, 429s, and the elapsed seconds (from before sign-in to the last call's end).
"""

import argparse
import json
import os
import sys
import threading
import time

import requests.adapters

# ---- counting every Web API request and answer at the transport ------------------------------------------


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.throttled = 0
        self.statuses = {}

    def answered(self, status):
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status == 429:
                self.throttled += 1


COUNTS = Counts()
_send = requests.adapters.HTTPAdapter.send


def _counting_send(self, request, *args, **kwargs):
    response = _send(self, request, *args, **kwargs)
    if "/api/data/" in request.url:
        COUNTS.answered(response.status_code)
    return response


requests.adapters.HTTPAdapter.send = _counting_send

from azure.identity import ClientSecretCredential  # noqa: E402
from PowerPlatform.Dataverse.client import DataverseClient  # noqa: E402
from PowerPlatform.Dataverse.core.errors import HttpError  # noqa: E402


def environment(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"set {name}: the application user's credentials come from the environment, never the command line")
    return value


class Chunks:
    """Hands out the next chunk of ids to whichever caller asks, until the deadline or the ids run out."""

    def __init__(self, count, per_call, deadline):
        self.lock = threading.Lock()
        self.next = 0
        self.count = count
        self.per_call = per_call
        self.deadline = deadline

    def take(self):
        with self.lock:
            if time.monotonic() >= self.deadline or self.next >= self.count:
                return None
            start = self.next
            self.next = min(self.count, start + self.per_call)
            return start, self.next


def caller(url, credential, ids, prefix, chunks, attempts, outcome):
    with DataverseClient(url, credential) as client:
        while (chunk := chunks.take()) is not None:
            start, end = chunk
            chunk_ids = ids[start:end]
            changes = [{"jobtitle": f"{prefix}-{i}"} for i in range(start, end)]
            for attempt in range(1, attempts + 1):
                try:
                    client.records.update("contact", chunk_ids, changes)
                    outcome.append(("written", start, end - start))
                    break
                except HttpError as error:
                    wait = error.details.get("retry_after")
                    if not error.is_transient or attempt == attempts:
                        outcome.append(("failed", start, f"HTTP {error.status_code}: {error.message}"))
                        break
                    time.sleep(wait if wait is not None else 1)
                except Exception as error:  # a network error the SDK gave up on after its own retries
                    outcome.append(("failed", start, f"{type(error).__name__}: {error}"))
                    break


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the environment URL, https://")
    parser.add_argument("--ids", required=True, help="a file of contact ids, one a line")
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--per-call", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--prefix", default="sdk")
    parser.add_argument("--attempts", type=int, default=10, help="tries of one call on 429/502/503/504")
    args = parser.parse_args()

    with open(args.ids) as file:
        ids = [line.strip() for line in file if line.strip()]
    started = time.monotonic()
    credential = ClientSecretCredential(
        environment("DATAVERSE_TENANT_ID"),
        environment("DATAVERSE_CLIENT_ID"),
        environment("DATAVERSE_CLIENT_SECRET"),
        authority=args.url,
        disable_instance_discovery=True,
    )
    chunks = Chunks(len(ids), args.per_call, started + args.seconds)
    outcome = []  # list.append is atomic: the callers share it
    threads = [
        threading.Thread(target=caller, args=(args.url, credential, ids, args.prefix, chunks, args.attempts, outcome))
        for _ in range(args.callers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started

    written = sorted((start, count) for kind, start, count in outcome if kind == "written")
    failures = [f"ids from line {start}: {reason}" for kind, start, reason in outcome if kind == "failed"]
    print(
        json.dumps(
            {
                "records": sum(count for _, count in written),
                "chunks": written,
                "calls": len(outcome),
                "failed_calls": len(failures),
                "failures": failures[:10],
                "requests": COUNTS.requests,
                "throttled": COUNTS.throttled,
                "statuses": {str(k): v for k, v in sorted(COUNTS.statuses.items())},
                "elapsed_seconds": elapsed,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
