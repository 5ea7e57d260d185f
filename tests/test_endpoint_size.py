"""Endpoints stay thin (docs/architecture.md: a dependency, a service call, a response
model): no route handler of a service is over MAX_LINES lines, decorators left out."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import pytest

SERVICES = ["ingest", "alerts", "referrals", "dashboard"]
MAX_LINES = 25


def _endpoints(routes: list[Any]) -> Iterator[tuple[str, Callable[..., Any]]]:
    """(path, handler) of every route, into included routers and mounted apps."""
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included router
        if included is not None:
            yield from _endpoints(included.routes)
        elif hasattr(route, "endpoint"):
            yield getattr(route, "path", "?"), route.endpoint
        else:
            yield from _endpoints(getattr(route, "routes", None) or [])


def _length(function: Callable[..., Any]) -> int:
    lines, _ = inspect.getsourcelines(inspect.unwrap(function))
    return sum(1 for line in lines if not line.lstrip().startswith("@"))


def _handlers(service: str) -> list[tuple[str, str, int]]:
    app = importlib.import_module(f"services.{service}.api").app
    found = []
    for path, endpoint in _endpoints(app.routes):
        function = inspect.unwrap(endpoint)
        if getattr(function, "__module__", "").startswith("services."):
            name = f"{function.__module__}.{function.__qualname__}"
            found.append((name, path, _length(function)))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_no_endpoint_is_over_the_limit(service: str) -> None:
    handlers = _handlers(service)
    assert handlers, f"no route handlers found in services.{service}.api"
    too_long = sorted(f"{name} ({path}): {n} lines" for name, path, n in handlers
                      if n > MAX_LINES)
    assert not too_long, f"endpoints over {MAX_LINES} lines:\n" + "\n".join(too_long)


def test_the_walk_finds_included_routers() -> None:
    """The check sees the routes of included routers, not only the app's own."""
    paths = {path for _name, path, _n in _handlers("ingest")}
    assert "/v1/drug-checks" in paths
