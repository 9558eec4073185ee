import time

from controlplane import gunicorn_embedded
from controlplane.gunicorn_embedded import _QuietTrim


def _wait(condition, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_heap_is_trimmed_once_quiet_after_a_large_request(monkeypatch):
    monkeypatch.setattr(gunicorn_embedded, "TRIM_QUIET_S", 0.2)
    trim = _QuietTrim()
    trim.started()
    trim.finished(large=True)
    assert trim.pending
    assert _wait(lambda: not trim.pending)


def test_no_trim_while_a_request_runs_or_after_small_ones(monkeypatch):
    monkeypatch.setattr(gunicorn_embedded, "TRIM_QUIET_S", 0.2)
    trim = _QuietTrim()
    trim.started()
    trim.finished(large=False)
    assert not trim.pending
    trim.started()
    trim.started()
    trim.finished(large=True)  # the other request is still running
    time.sleep(0.8)
    assert trim.pending
    trim.finished(large=False)
    assert _wait(lambda: not trim.pending)
