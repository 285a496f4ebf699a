"""The app the browser test serves: its broker comes from OFFLOAD_BROKER."""

from __future__ import annotations

from tests.dashboard.conftest import make_app

app = make_app(None)  # type: ignore[arg-type]
