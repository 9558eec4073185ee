import gc

from controlplane.gctune import YOUNGEST, collect_less


def test_collect_less_freezes_the_set_up_and_collects_the_young_less_often():
    threshold = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_threshold() == (YOUNGEST, threshold[1], threshold[2])
        assert gc.get_freeze_count() > 0
        # Frozen objects stay alive and collectable cycles are still collected.
        cycle = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
