from offload.message.ids import new_id


def test_ids_are_unique_hex_and_ordered_by_creation_time() -> None:
    import time

    first = new_id()
    time.sleep(0.002)
    later = [new_id() for _ in range(10_000)]
    assert len(first) == 32 and int(first, 16) >= 0
    assert len(set(later)) == len(later)
    assert all(first < i for i in later), "an id made later sorts later"
