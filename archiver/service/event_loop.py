"""The event loop a long-running command runs on: uvloop when installed and not refused, else asyncio.

uvloop measured faster on the NATS hot path (see BENCHMARKS.md); ``EVENT_LOOP``
(:attr:`archiver.config.RunConfig.event_loop`) refuses it (``asyncio``) or
requires it (``uvloop``). Used by ``archiver run`` and by the demo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from archiver.errors import ConfigError

T = TypeVar("T")


def run_async(main: Callable[[], Coroutine[Any, Any, T]], event_loop: str = "auto") -> T:
    """Run a coroutine on uvloop when installed and not refused (see BENCHMARKS.md), else asyncio."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ConfigError(
                    "EVENT_LOOP: uvloop is not installed (pip install 'archiver[fast]')"
                ) from None
        else:
            return uvloop.run(main())
    return asyncio.run(main())
