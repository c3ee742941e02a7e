"""Threads on shared cores (common/cpu_share.py): another process's busy core is seen and left
to it; this process's own threads are not counted as a neighbour."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch

from chatsmith.common.cpu_share import busy_elsewhere, free_cores
from chatsmith.common.device import set_threads

SPIN = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"


@pytest.mark.parametrize(
    ("cores", "others", "want"),
    [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 1.9, 1), (2, 3.0, 1), (8, 3.2, 5), (8, 0.6, 7)],
)
def test_free_cores_leaves_the_busy_ones(cores: int, others: float, want: int) -> None:
    assert free_cores(cores, others) == want


@pytest.fixture
def busy_neighbour():
    p = subprocess.Popen([sys.executable, "-c", SPIN])
    time.sleep(0.3)  # past its start-up
    yield p
    p.kill()
    p.wait()


def test_a_busy_neighbour_is_seen_and_takes_a_thread(busy_neighbour) -> None:
    assert busy_elsewhere(0.5) >= 0.7
    before = torch.get_num_threads()
    try:
        if before >= 2:
            assert set_threads(0) == before - 1
    finally:
        torch.set_num_threads(before)


def test_this_process_own_work_is_not_a_neighbour(busy_neighbour) -> None:
    neighbour = busy_elsewhere(0.5)
    busy_neighbour.kill()
    busy_neighbour.wait()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        own = busy_elsewhere(0.5)
    finally:
        stop.set()
        t.join()
    assert own < neighbour - 0.5, (own, neighbour)
