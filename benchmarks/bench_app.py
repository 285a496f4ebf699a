"""The benchmark's app: no-op tasks (the broker URL comes from OFFLOAD_BROKER)."""

from offload import App

app = App(default_queue="bench")


@app.task(name="bench.noop")
async def noop(i: int) -> None:
    return None


@app.task(name="bench.sync_noop")
def sync_noop(i: int) -> None:
    return None


@app.on("bench.one", group="g0")
async def one_group(event: dict) -> None:  # type: ignore[type-arg]
    return None


def _five(i: int):  # type: ignore[no-untyped-def]
    async def handler(event: dict) -> None:  # type: ignore[type-arg]
        return None

    handler.__name__ = f"g{i}"
    return handler


for _i in range(5):
    app.on("bench.five", group=f"g{_i}")(_five(_i))
