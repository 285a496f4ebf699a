"""The console scripts of the venv this driver runs in."""

import sys
from pathlib import Path


def script(name: str) -> str:
    return str(Path(sys.executable).parent / name)
