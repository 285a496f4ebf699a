"""Every ``python`` code block in README.md and docs/*.md runs, in order, per file.

Blocks of one file share a namespace and run in a fresh temporary directory (so the
default ``sqlite:///offload.db`` lands there). Top-level ``await`` is allowed, as in a
notebook. Blocks fenced as ``text`` or ``sh`` are illustrations and are not run.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("path", [f for f in FILES if blocks(f)], ids=lambda p: p.name)
def test_code_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OFFLOAD_BROKER", raising=False)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    loop = asyncio.new_event_loop()
    try:
        for line, source in blocks(path):
            code = compile(
                source, f"{path.name}:{line}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
            )
            if code.co_flags & inspect.CO_COROUTINE:
                loop.run_until_complete(eval(code, namespace))
            else:
                exec(code, namespace)
        app = namespace.get("app")
        if app is not None and hasattr(app, "close"):
            loop.run_until_complete(app.close())  # type: ignore[union-attr]
    finally:
        loop.close()
        os.chdir(ROOT)
