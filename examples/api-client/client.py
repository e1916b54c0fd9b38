#!/usr/bin/env python3
"""A minimal HappyX API client (Python 3 standard library only).

Run it against a running host:

    happyx serve &
    export HAPPYX_URL=http://127.0.0.1:7878
    export HAPPYX_TOKEN=$(happyx token create --data-dir ./happyx-data --role operator)
    python3 examples/api-client/client.py

What you will see: the created task and session as JSON, then every audit event
in order, one line each ("seq code subject"), fetched page by page.

Copy it: every call goes through `api()`, which sends the bearer token, parses
the JSON body and turns an error body {"code","message"} into an ApiError you
can match on by `code`.
"""

import json
import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get("HAPPYX_URL", "http://127.0.0.1:7878").rstrip("/")
TOKEN = os.environ.get("HAPPYX_TOKEN", "")


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + TOKEN)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            err = json.loads(e.read())
        except ValueError:
            err = {"code": "http_error", "message": str(e)}
        raise ApiError(e.code, err.get("code"), err.get("message")) from None


def events(after=0, limit=100):
    """Yields every event with seq > after, paging until the log is exhausted."""
    while True:
        page = api("GET", f"/v1/events?after={after}&limit={limit}")
        if not page["events"]:
            return
        yield from page["events"]
        after = page["next_after"]


def main():
    if not TOKEN:
        sys.exit("set HAPPYX_TOKEN (happyx token create --data-dir DIR --role operator)")
    task = api("POST", "/v1/tasks", {"title": "triage the failing build", "description": "from the api-client example"})
    print(json.dumps(task))
    session = api("POST", "/v1/sessions", {"name": "triage", "kind": "agent", "task_id": task["id"]})
    print(json.dumps(session))
    try:
        api("POST", "/v1/tasks", {"title": 42})
    except ApiError as e:
        print(f"a bad request is refused with a typed error: {e.code}", file=sys.stderr)
    for ev in events():
        print(ev["seq"], ev["code"], ev["subject"])


if __name__ == "__main__":
    main()
