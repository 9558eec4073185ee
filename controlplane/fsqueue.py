"""The embedded default's Celery broker: kombu's filesystem transport, with messages
that appear whole.

kombu writes a message file in place (create, then write), and a consumer polling the
folder can take the file in between: it reads an empty message, and the worker dies on
a JSONDecodeError (celery/kombu#1551). Here a message is written under a name no
consumer takes, then renamed into place, which is atomic on one file system. Names
start with the monotonic clock in zero-padded nanoseconds (kombu's: milliseconds, then
a random uuid), so consumers, which take them in name order, take them in order sent.
"""

import os
import uuid
from time import monotonic_ns

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

PARTIAL = ".partial"  # consumers take only names ending in ".{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"
        path = os.path.join(self.data_folder_out, name)
        try:
            with open(path + PARTIAL, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(path + PARTIAL, path)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {path!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
