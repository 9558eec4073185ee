"""The embedded broker never hands a consumer a message that is still being written."""

import contextlib
import os

import pytest
from kombu import Connection
from kombu.transport.virtual import Empty

from controlplane import fsqueue


def channel_in(folder):
    conn = Connection(
        "filesystem://",
        transport="controlplane.fsqueue:Transport",
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder),
            "store_processed": False,
        },
    )
    return conn, conn.default_channel


def test_a_consumer_polling_while_a_message_is_written_finds_nothing(tmp_path, monkeypatch):
    conn, channel = channel_in(tmp_path)
    found = []

    def open_then_poll(path, mode="r", *args, **kwargs):
        handle = open(path, mode, *args, **kwargs)  # noqa: SIM115 - the caller closes it
        if "w" in mode:  # the producer's file exists, still empty: a consumer polls now
            with contextlib.suppress(Empty):
                found.append(channel._get("celery"))
        return handle

    monkeypatch.setattr(fsqueue, "open", open_then_poll, raising=False)
    channel._put("celery", {"body": "run 1"})
    assert found == []
    assert channel._get("celery") == {"body": "run 1"}
    with pytest.raises(Empty):
        channel._get("celery")
    assert os.listdir(tmp_path) == []
    conn.release()


def test_messages_keep_their_order(tmp_path):
    conn, channel = channel_in(tmp_path)
    for n in range(3):
        channel._put("celery", {"n": n})
    assert [channel._get("celery")["n"] for _ in range(3)] == [0, 1, 2]
    conn.release()
