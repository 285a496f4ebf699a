"""The conformance suite also runs the backends' variants (tests/backends.py:
CONFORMANCE_ONLY), such as the Redis broker's EVALSHA path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.backends import CONFORMANCE_ONLY, backend_names
from tests.conftest import make_broker

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from offload.brokers import Broker
    from offload.clock import FakeClock


@pytest.fixture(params=[*backend_names(), *CONFORMANCE_ONLY])
async def broker(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Broker]:
    """An open broker of each backend and variant, driven by a fake clock."""
    async for b in make_broker(request.param, tmp_path, clock):
        yield b
