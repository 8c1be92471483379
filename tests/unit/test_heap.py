"""``tradewire.heap``: the serving loop's garbage-collector settings."""

import gc

from tradewire import heap


def test_settle_freezes_the_startup_heap_once_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        heap._settled = False
        heap.settle()
        assert gc.get_freeze_count() > frozen
        assert gc.get_threshold()[0] >= heap.YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        count = gc.get_freeze_count()
        heap.settle()  # idempotent: objects made while serving are not frozen
        assert gc.get_freeze_count() == count
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
