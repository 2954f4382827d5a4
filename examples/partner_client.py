"""Register the users of a CSV file through the Partner API.

Usage::

    PARTNER_API_KEY=... python examples/partner_client.py --csv examples/users.csv

Each row becomes one ``POST /v1/internal/users``. Rate limiting (429) and
transient failures (network errors, 503) are retried; rows the API refuses are
written, with the reason, to a rejects CSV. The exit code is 0 when every row
was processed, 1 when the API key is refused or the server cannot be reached.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import requests
from tqdm import tqdm

# CSV column -> API field.
FIELDS = {
    "email": "email",
    "password": "password",
    "first_name": "firstName",
    "last_name": "lastName",
    "external_id": "externalId",
}
MAX_RATE_LIMITED = 20  # 429s in a row before giving up on a row
BACKOFF = [0.5, 1, 2, 4]  # seconds between attempts on network errors / 503
TIMEOUT = 10  # seconds


class Fatal(Exception):
    """Stop the whole run: bad key or unreachable server."""


def error_info(response: requests.Response) -> tuple[str, str, dict[str, Any]]:
    """Return (message, code, details) from an error body, tolerating non-JSON."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # E.g. an HTML page from a proxy in front of the API.
        return response.reason or "no message", "", {}
    details = body.get("details")
    return (
        str(body.get("message", "")),
        str(body.get("code", "")),
        details if isinstance(details, dict) else {},
    )


def flatten(details: dict[str, Any]) -> str:
    """``{"email": ["a", "b"]}`` -> ``"email: a; email: b"``."""
    return "; ".join(
        f"{field}: {reason}"
        for field, reasons in details.items()
        for reason in (reasons if isinstance(reasons, list) else [reasons])
    )


def post(
    session: requests.Session, url: str, payload: dict[str, str], bar: tqdm
) -> requests.Response:
    """POST one user, retrying on 429, 503 and network errors."""
    # One Idempotency-Key for every attempt at this row: if a POST timed out
    # after the user was created, the retry replays that 201 instead of a 409.
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    rate_limited = failures = 0
    while True:
        try:
            response = session.post(url, json=payload, headers=headers, timeout=TIMEOUT)
        except requests.RequestException as exc:
            if failures == len(BACKOFF):
                raise Fatal(f"server unreachable at {url}: {exc}") from exc
            time.sleep(BACKOFF[failures])
            failures += 1
            continue
        if response.status_code == 429:
            rate_limited += 1
            if rate_limited == MAX_RATE_LIMITED:
                return response
            try:
                wait = max(1, int(response.headers.get("Retry-After", "1")))
            except ValueError:
                wait = 1
            bar.set_postfix_str(f"rate limited, waiting {wait}s")
            time.sleep(wait)
            bar.set_postfix_str("")
            continue
        # 409 idempotency_key_in_use: the first attempt is still running.
        in_use = response.status_code == 409 and "Retry-After" in response.headers
        if (response.status_code == 503 or in_use) and failures < len(BACKOFF):
            time.sleep(BACKOFF[failures])
            failures += 1
            continue
        return response


def classify(response: requests.Response) -> tuple[str, str]:
    """Return (outcome, reason); outcome is created, registered or rejected."""
    status = response.status_code
    if status == 201:
        return "created", ""
    message, code, details = error_info(response)
    if status == 401:
        raise Fatal(f"API key rejected: {message}")
    if status == 409 and code in ("email_taken", "external_id_taken"):
        return "registered", code
    if status == 400:
        return "rejected", f"{message} ({flatten(details)})" if details else message
    return "rejected", f"HTTP {status}: {message}"


def run(args: argparse.Namespace) -> int:
    with args.csv.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)

    session = requests.Session()
    session.headers["x-api-key"] = args.key
    url = args.url.rstrip("/") + "/v1/internal/users"
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    rejects: list[dict[str, str]] = []

    with tqdm(rows, unit="user") as bar:
        for row in bar:
            # Empty cells mean "not provided", not "empty string".
            payload = {api: row[col] for col, api in FIELDS.items() if row.get(col)}
            response = post(session, url, payload, bar)
            outcome, reason = classify(response)
            counts[outcome] += 1
            if outcome == "rejected":
                reasons[reason] += 1
                status = str(response.status_code)
                rejects.append({**row, "status": status, "reason": reason})

    with args.rejects.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=[*columns, "status", "reason"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rejects)

    print(f"created:            {counts['created']}")
    print(f"already registered: {counts['registered']}")
    print(f"rejected:           {counts['rejected']} (details in {args.rejects})")
    for reason, n in reasons.most_common(10):
        print(f"  {n:5d}  {reason}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("PARTNER_API_KEY"))
    parser.add_argument(
        "--csv", type=Path, default=Path(__file__).with_name("users.csv")
    )
    parser.add_argument("--rejects", type=Path, default=Path("rejects.csv"))
    args = parser.parse_args()
    if not args.key:
        parser.error("an API key is required (--key or PARTNER_API_KEY)")
    try:
        return run(args)
    except Fatal as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
