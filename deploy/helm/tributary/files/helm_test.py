"""`helm test <release>`: every service's /readyz answers 200, and one API route answers
200 to a token of the Secret's API_TOKENS that has the route's scope.

Run by the chart's test Pod as ``python -c`` in a service image (the standard library
and the shared library every image has). Settings, from the Pod's environment:

- ``READYZ_URLS``: the /readyz URLs, space-separated;
- ``API_URL``, ``API_SCOPE``: the route called and the scope its token needs (no
  ``API_URL``: no API call);
- ``API_TOKENS``: the services' tokens, ``name:token:scopes`` entries (docs/security.md);
- ``TEST_DEADLINE_SECONDS``: how long a service may take to become ready (default 60).

Prints one line per check and exits 1 when any failed. Never prints a token.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.error
import urllib.request

from tributary.web.tokens import scope_granted

#: how long each URL may take to answer 200, in seconds (a rollout may still be settling)
DEFAULT_DEADLINE_SECONDS = 60.0
#: pause between two tries of one URL, in seconds
RETRY_PAUSE_SECONDS = 2.0
#: one request's time-out, in seconds
REQUEST_TIMEOUT_SECONDS = 5.0


def token_for(entries: str, scope: str) -> tuple[str, str] | None:
    """(name, token) of the first API_TOKENS entry that grants ``scope``."""
    for entry in re.split(r"[,\n]", entries):
        name, _, rest = entry.strip().partition(":")
        token, _, scopes = rest.partition(":")
        if token and scope_granted(scopes.split(), scope):
            return name, token
    return None


def status_of(url: str, token: str | None = None) -> int | str:
    """The HTTP status of GET ``url``, or why there was none."""
    request = urllib.request.Request(url)  # noqa: S310 - the chart's own http:// URLs
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def answers_200(url: str, deadline: float, token: str | None = None) -> bool:
    """Poll ``url`` until it answers 200 or the deadline passes; one line says how it went."""
    while True:
        status = status_of(url, token)
        if status == 200 or time.monotonic() >= deadline:
            break
        time.sleep(RETRY_PAUSE_SECONDS)
    print(f"{'ok' if status == 200 else 'FAILED'}: GET {url} -> {status}", flush=True)
    return status == 200


def main() -> int:
    seconds = float(os.environ.get("TEST_DEADLINE_SECONDS", DEFAULT_DEADLINE_SECONDS))
    deadline = time.monotonic() + seconds
    results = [answers_200(url, deadline) for url in os.environ.get("READYZ_URLS", "").split()]
    api_url = os.environ.get("API_URL", "")
    if api_url:
        scope = os.environ.get("API_SCOPE", "")
        found = token_for(os.environ.get("API_TOKENS", ""), scope)
        if found is None:
            print(f"FAILED: no API_TOKENS entry in the Secret grants {scope}", flush=True)
            results.append(False)
        else:
            print(f"calling with the token of API_TOKENS entry {found[0]!r} ({scope})")
            results.append(answers_200(api_url, deadline, found[1]))
    if not results:
        print("FAILED: nothing to check (no service enabled)", flush=True)
    return 0 if results and all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
