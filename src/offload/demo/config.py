"""Where the demo keeps things and how its parts find each other.

The tasks run in the demo's worker, in its threads and in child processes (the invoice
renderer), so they learn the settings from the environment, which every one of them
inherits: the runner writes the settings there before it starts the worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]

_DIR = "OFFLOAD_DEMO_DIR"
_SMTP = "OFFLOAD_DEMO_SMTP"
_URL = "OFFLOAD_DEMO_URL"


@dataclass(frozen=True, slots=True)
class Settings:
    """The demo's directory, its mail server and the shop's public URL.

    Attributes:
        dir: holds the shop's database (``shop.db``), the invoices (``invoices/``) and,
            on the default broker, the broker's database (``broker.db``).
        smtp_host, smtp_port: the SMTP server receipts and reports are sent to.
        shop_url: the shop's base URL, for links in e-mails.
    """

    dir: Path
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    shop_url: str = "http://127.0.0.1:8000"

    @property
    def invoices(self) -> Path:
        """The directory the invoice renderer writes PDFs to."""
        return self.dir / "invoices"

    @property
    def shop_db(self) -> Path:
        """The shop's own database."""
        return self.dir / "shop.db"

    def invoice_path(self, order_id: str) -> Path:
        """Where the invoice of ``order_id`` is written."""
        return self.invoices / f"invoice-{order_id}.pdf"

    def to_env(self) -> dict[str, str]:
        """The settings as the environment variables :meth:`from_env` reads."""
        return {
            _DIR: str(self.dir),
            _SMTP: f"{self.smtp_host}:{self.smtp_port}",
            _URL: self.shop_url,
        }

    @classmethod
    def from_env(cls) -> Settings:
        """The settings the runner published (defaults: ``./offload-demo``, port 8025)."""
        host, _, port = os.environ.get(_SMTP, "127.0.0.1:8025").rpartition(":")
        return cls(
            dir=Path(os.environ.get(_DIR, "offload-demo")).resolve(),
            smtp_host=host or "127.0.0.1",
            smtp_port=int(port),
            shop_url=os.environ.get(_URL, "http://127.0.0.1:8000"),
        )
