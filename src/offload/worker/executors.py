"""Where task code runs: on the loop, in threads, or in killable child processes.

* ``async`` tasks run on the worker's event loop; a time limit cancels them.
* ``thread`` (default for sync functions): a pool of daemon threads. Python cannot kill a
  thread, so a timed-out sync task is reported as timed out and its slot freed; the pool
  grows a thread to replace the one still stuck, and logs it.
* ``process`` (CPU-bound work): a pool of child processes, one call at a time each. A time
  limit kills the child and a new one replaces it, so a stuck C extension cannot hold a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import logging
import multiprocessing
import os
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from offload.context import JobContext, set_current
from offload.errors import Cancel, Retry

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

__all__ = ["ProcessCrashed", "ProcessPool", "RemoteError", "ThreadPool", "function_ref"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- threads


class ThreadPool:
    """Daemon threads that grow on demand and retire after being idle a while."""

    def __init__(self, name: str = "offload-task", idle_s: float = 60.0) -> None:
        self._name = name
        self._idle_s = idle_s
        self._work: queue.SimpleQueue[tuple[Callable[[], Any], _Result] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Threads alive now (including any stuck in timed-out tasks)."""
        return self._threads

    def submit(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run ``fn`` in a thread; the returned future resolves on the caller's loop."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
            else:
                self._threads += 1
                n = self._threads
                threading.Thread(target=self._run, name=f"{self._name}-{n}", daemon=True).start()
        self._work.put((fn, _Result(loop, fut)))
        return fut

    def _run(self) -> None:
        while True:
            try:
                item = self._work.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counts on this thread: retire it
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            if item is None:
                with self._lock:
                    self._threads -= 1
                return
            fn, result = item
            try:
                result.set(fn(), None)
            except BaseException as exc:
                result.set(None, exc)
            with self._lock:
                self._idle += 1

    def close(self) -> None:
        """Ask idle threads to exit (busy ones finish their task first)."""
        with self._lock:
            self._closed = True
            n = self._threads
        for _ in range(n):
            self._work.put(None)


@dataclass(slots=True)
class _Result:
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[Any]

    def set(self, value: Any, exc: BaseException | None) -> None:
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self.loop.call_soon_threadsafe(_resolve, self.fut, value, exc)


def _resolve(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


def run_in_context(
    ctx: JobContext, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> Callable[[], Any]:
    """A thunk that runs ``fn`` with the job context set (for a thread)."""
    context = contextvars.copy_context()

    def thunk() -> Any:
        def call() -> Any:
            set_current(ctx)
            return fn(*args, **kwargs)

        return context.run(call)

    return thunk


# --------------------------------------------------------------------------- processes


class RemoteError(Exception):
    """An exception raised by a task in a child process, carried back as text."""

    def __init__(self, type_name: str, message: str, tb: str) -> None:
        self.type_name = type_name
        self.message = message
        self.remote_traceback = tb
        super().__init__(f"{type_name}: {message}")


class ProcessCrashed(Exception):
    """The child process running the task died (killed, crashed, out of memory)."""


def function_ref(fn: Callable[..., Any]) -> tuple[str, str]:
    """``(module, qualname)`` of a top-level function, to import it in a child process."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or module == "__main__":
        raise ValueError(
            f"{fn!r} cannot run in a process pool: define it at the top level of an importable "
            "module (not in __main__ or inside a function)."
        )
    return module, qualname


def _load(module: str, qualname: str) -> Callable[..., Any]:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    fn: Callable[..., Any] = getattr(obj, "__wrapped__", obj)  # a Task wraps the function
    return fn


def _child_main(conn: Connection, sys_path: list[str]) -> None:
    """Loop of a pool child: run one call at a time, send back the outcome."""
    sys.path[:] = sys_path
    cache: dict[tuple[str, str], Callable[..., Any]] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        ref, args, kwargs, ctx_fields = msg
        ctx = JobContext(**ctx_fields, _sink=lambda i, v, m: conn.send(("progress", i, v, m)))
        set_current(ctx)
        try:
            fn = cache.get(ref) or cache.setdefault(ref, _load(*ref))
            conn.send(("ok", fn(*args, **kwargs)))
        except Retry as exc:
            conn.send(("retry", exc.delay, exc.reason))
        except Cancel as exc:
            conn.send(("cancel", str(exc)))
        except BaseException as exc:
            conn.send(("error", type(exc).__qualname__, str(exc), traceback.format_exc()))


class _Slot:
    def __init__(self, ctx: Any) -> None:
        parent, child = ctx.Pipe()
        self.conn: Connection = parent
        self.proc: BaseProcess = ctx.Process(
            target=_child_main, args=(child, list(sys.path)), daemon=True, name="offload-proc"
        )
        self.proc.start()
        child.close()

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


class ProcessPool:
    """Child processes (spawned, so no inherited locks) that run one call each at a time."""

    def __init__(self, size: int | None = None, progress: ProgressCallback | None = None) -> None:
        self.size = size or os.cpu_count() or 2
        self._mp = multiprocessing.get_context("spawn")
        self._idle: list[_Slot] = []
        self._slots = asyncio.Semaphore(self.size)
        self._progress = progress

    async def run(
        self,
        fn: Callable[..., Any],
        args: list[Any],
        kwargs: dict[str, Any],
        ctx: JobContext,
        timeout_s: float | None,
    ) -> Any:
        """Run ``fn`` in a child; kill the child if it outlives ``timeout_s``.

        Raises:
            TimeoutError: the time limit passed (the child was killed).
            RemoteError / Retry / Cancel: what the task raised.
            ProcessCrashed: the child died.
        """
        ref = function_ref(fn)
        async with self._slots:
            slot = self._idle.pop() if self._idle else await asyncio.to_thread(_Slot, self._mp)
            fields = _ctx_fields(ctx)
            try:
                async with asyncio.timeout(timeout_s):
                    reply = await asyncio.to_thread(self._call, slot, (ref, args, kwargs, fields))
            except BaseException:
                await asyncio.to_thread(slot.kill)  # timed out or cancelled: never reuse
                raise
            self._idle.append(slot)
        return _unpack(reply)

    def _call(self, slot: _Slot, msg: tuple[Any, ...]) -> tuple[Any, ...]:
        try:
            slot.conn.send(msg)
            while True:
                reply: tuple[Any, ...] = slot.conn.recv()
                if reply[0] != "progress":
                    return reply
                if self._progress is not None:
                    self._progress(reply[1], reply[2], reply[3])
        except (EOFError, OSError, BrokenPipeError) as exc:
            slot.proc.join(timeout=1)
            code = slot.proc.exitcode
            raise ProcessCrashed(
                f"the worker child process died while running the task (exit code {code})"
            ) from exc

    def close(self) -> None:
        """Stop the idle children."""
        for slot in self._idle:
            slot.kill()
        self._idle.clear()


ProgressCallback = Callable[[str, float, "str | None"], None]


def _ctx_fields(ctx: JobContext) -> Mapping[str, Any]:
    return {
        "id": ctx.id,
        "name": ctx.name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "max_attempts": ctx.max_attempts,
        "enqueued_at": ctx.enqueued_at,
        "headers": dict(ctx.headers),
        "key": ctx.key,
    }


def _unpack(reply: tuple[Any, ...]) -> Any:
    kind = reply[0]
    if kind == "ok":
        return reply[1]
    if kind == "retry":
        raise Retry(reply[1], reply[2])
    if kind == "cancel":
        raise Cancel(reply[1])
    raise RemoteError(reply[1], reply[2], reply[3])
