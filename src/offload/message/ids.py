"""Job and event ids: 32 hex digits, ordered by creation time (the UUIDv7 layout).

The first 12 digits are the creation time in milliseconds, the other 20 are random
(80 bits). Ids made later sort later, so each backend's id index receives inserts at
its end instead of at random pages (cheaper writes, smaller write-ahead logs), and a
listing by id reads in enqueue order. Two ids made in the same millisecond by one
process still differ in their random part; collisions need 2**40 ids in one millisecond.
"""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]


def new_id() -> str:
    """A new time-ordered, random id (32 lowercase hex digits)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
