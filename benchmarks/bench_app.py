"""The benchmark's app: no-op tasks (the broker URL comes from OFFLOAD_BROKER)."""

from offload import App

app = App(default_queue="bench")


@app.task(name="bench.noop")
async def noop(i: int) -> None:
    return None


@app.task(name="bench.sync_noop")
def sync_noop(i: int) -> None:
    return None
