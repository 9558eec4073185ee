"""Content-addressed payloads: each message and large value stored once per tenant.

A payload's digest is a keyed BLAKE2b-128 of its unredacted canonical form (keyed per
tenant and redaction-policy version, so the digest reveals nothing of the text and new
rules apply to old messages). A message seen before therefore costs a digest and a
lookup, not another redaction scan:

    value ─canonical bytes─▶ digest ─▶ seen (process cache or database)? ─▶ reference
                                           └─ new: redact → zstd → inline or blob store

A conversation resent on every step is stored as a chain, each link holding where the
longest list already stored is plus the new messages, so a trace's storage grows with
the conversation's length, not its square. Within one batch the links of a trace live
in its chat spans' details (the previous chat span: its input and output, then what is
new), which costs no row; a LIST payload (a head list's digest plus the new messages)
or a SPAN_LIST payload (a span holding the list) is written only where another batch
or trace may continue the chain: the last list of each trace in the batch.
"""

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import date

import orjson
from django.db import connection

from controlplane.blobstore import get_blob_store, tenant_key
from controlplane.models import Tenant
from controlplane.tenantcache import TenantCache
from tracing.digests import DIGEST_BYTES, digest_bytes, digest_text
from tracing.ingest import dictionaries
from tracing.ingest.rows import PayloadRow, json_param, payloads_stored
from tracing.models import DayField, Payload, PayloadKind

# Strings longer than this inside messages become payloads of their own, so the same
# tool result stored with its tool span and inside the next chat message is one copy.
LEAF_MIN = 256
# Compressed payloads up to this size stay in the database row; larger ones go to the
# blob store (one S3 request for a few hundred bytes costs more than the row).
INLINE_MAX = 1024
LEAF_KEY = "\x00ref"
LIST_KINDS = (PayloadKind.LIST, PayloadKind.SPAN_LIST)


def canonical(value) -> bytes:
    """One byte of type, then the text or sorted-key JSON: equal values, equal bytes."""
    if isinstance(value, str):
        return b"s" + value.encode()
    return b"j" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def from_canonical(data: bytes):
    if data[:1] == b"s":
        return data[1:].decode()
    return orjson.loads(data[1:])


def blob_key(tenant_id: int, digest: str) -> str:
    # Hex in object names: base64's upper and lower case would collide on
    # case-insensitive file systems.
    name = digest_bytes(digest).hex()
    return tenant_key(tenant_id, "blobs", name[:2], f"{name}.zst")


# Payloads known to be committed: digest -> (redaction counts, day last seen, the
# tenant's payload_sweeps when it was known). Retention removes payloads from another
# process, so an entry is trusted only while the tenant's count of removals is the one
# it was known at; after a removal each payload is looked up once more.
seen_cache = TenantCache("seen payloads", size=200_000)


class PayloadsSwept(Exception):
    """Retention removed payloads of the tenant while a batch was being prepared: what
    the batch took as stored may be gone, so it is prepared again."""


def payload_sweeps(tenant_id: int) -> int:
    """How many times retention has removed the tenant's payload rows (Tenant's
    payload_sweeps), read from the database on each call."""
    found = Tenant.objects.filter(pk=tenant_id).values_list("payload_sweeps", flat=True)
    return next(iter(found), 0)


@dataclass(slots=True)
class NewPayload:
    """A value of the batch not stored yet."""

    kind: int
    raw: object  # as sent, unredacted
    scan: bool  # redacted before storing (not from a never-scan key)


@dataclass(slots=True)
class NewList:
    """A list of messages of the batch not stored yet."""

    items: list[str]  # its messages' digests
    prefixes: list[str]  # digests of its shorter lists, shortest first
    cut: int | None  # index of a prefix known when the list was seen
    owners: list[tuple[bytes, int]]  # the spans (trace id, span id) it is the input of
    # What its span's detail holds instead of its digest, once the batch is seen:
    # the list's form there (None: the span refers to the stored list).
    in_span: dict | None = None


class PayloadBatch:
    """Collects the payloads of one ingest batch, then stores the new ones together."""

    def __init__(self, *, tenant_id: int, digest_key: bytes, redactor):
        self.tenant_id = tenant_id
        self.digest_key = digest_key
        self.redactor = redactor
        self.today = date.today()
        self.sweeps = payload_sweeps(tenant_id)
        self.known: dict[str, dict | None] = {}  # digest -> redaction counts
        self.stale: set[str] = set()  # known, but last seen before today
        self.new: dict[str, NewPayload] = {}
        self.lists: dict[str, NewList] = {}
        self.raw: dict[str, bytes] = {}  # digest text -> its 16 bytes, for list chaining
        self.outputs: dict[tuple[bytes, int], list[str]] = {}  # span -> its output messages
        self.referenced: set[str] = set()  # stored messages given by digest (stored_list)
        self.by_object: dict[tuple[int, bool], tuple[object, str]] = {}  # see message()
        # The last list chained: (its items, the digests of its prefixes, shortest first).
        self.last_chain: tuple[list[str], list[str]] = ([], [])

    # --- digests ----------------------------------------------------------------------

    def digest(self, data: bytes) -> str:
        raw = hashlib.blake2b(data, key=self.digest_key, digest_size=DIGEST_BYTES).digest()
        text = digest_text(raw)
        self.raw[text] = raw
        return text

    def _remembered(self, digest: str) -> bool:
        if digest in self.known:
            return True
        cached = seen_cache.get(self.tenant_id, digest)
        if cached is None or cached[2] != self.sweeps:
            return False  # unknown, or known before retention last removed payloads
        self.known[digest] = cached[0]
        if cached[1] < self.today:
            self.stale.add(digest)
        return True

    def _note(self, kind: int, raw, scan: bool) -> str:
        # A value stored unscanned (a tenant's never-scan key) must not be served where
        # the same text is to be redacted, so the two get different digests.
        data = canonical(raw) if scan else b"\x00raw" + canonical(raw)
        digest = self.digest(data)
        if digest not in self.new and not self._remembered(digest):
            self.new[digest] = NewPayload(kind, raw, scan)
        return digest

    def value(self, value, *, kind: int = PayloadKind.VALUE, scan: bool = True) -> str:
        return self._note(kind, value, scan)

    def message(self, message, *, scan: bool = True) -> str:
        # A resent conversation's earlier messages are the objects an earlier span of
        # the batch had (normalise.ResentMessages): their digest is known. The entry
        # holds the message, so its id names no other object while the batch lives.
        key = (id(message), scan)
        known = self.by_object.get(key)
        if known is not None and known[0] is message:
            return known[1]
        digest = self._note(PayloadKind.MESSAGE, message, scan)
        self.by_object[key] = (message, digest)
        return digest

    def message_list(
        self, messages: list, *, scan: bool = True, owner: tuple[bytes, int] | None = None
    ) -> tuple[str, list[str]]:
        """Digest of a list of messages, and its messages' digests. `owner`: the span
        (trace id, span id) whose input the list is."""
        items = [self.message(m, scan=scan) for m in messages]
        return self._list(items, owner), items

    def stored_list(self, items: list[str], *, owner: tuple[bytes, int]) -> str:
        """Digest of a list of messages stored already, given by their digests (a
        replayed call's conversation, as its source span holds it): chained like any
        list, without the messages' canonical bytes or a redaction scan."""
        raw, referenced = self.raw, self.referenced
        # A replay's every step names its source's conversation so far: each message is
        # seen once per step it is in, so only what this batch has not seen yet is
        # decoded and looked up.
        for item in items:
            if item not in raw:
                raw[item] = digest_bytes(item)
                # Their redaction counts, looked up with the batch's new payloads, count
                # for the span as they did for its source; their last_seen kept fresh.
                if item not in referenced and not self._remembered(item):
                    referenced.add(item)
        return self._list(items, owner)

    def _chain(self, items: list[str]) -> list[str]:
        """The digests of the list's prefixes, shortest first (the last is the list's).
        A conversation's next step is the last list chained plus a few messages: only
        those are chained here, not the whole conversation again."""
        last_items, last_prefixes = self.last_chain
        known = len(last_items)
        if not (0 < known <= len(items) and items[:known] == last_items):
            known, last_prefixes = 0, []
        prefixes = last_prefixes[:known]
        chain = self.raw[prefixes[-1]] if prefixes else b"L"
        for item in items[known:]:
            link = self.digest(chain + self.raw[item])
            prefixes.append(link)
            chain = self.raw[link]
        self.last_chain = (items, prefixes)
        return prefixes

    def _list(self, items: list[str], owner: tuple[bytes, int] | None) -> str:
        prefixes = self._chain(items)
        digest = prefixes[-1] if prefixes else self.digest(b"L")
        owners = [owner] if owner is not None else []
        if digest in self.lists:
            self.lists[digest].owners += owners
            return digest
        if self._remembered(digest):
            return digest
        cut = None
        # Usually the previous step's list is known already: the conversation so far.
        for index in range(len(prefixes) - 2, -1, -1):
            if prefixes[index] in self.lists or self._remembered(prefixes[index]):
                cut = index
                break
        self.lists[digest] = NewList(items, prefixes[:-1], cut, owners)
        return digest

    def output(self, owner: tuple[bytes, int], digests: list[str]) -> None:
        """The span's output messages: the next chat span's input may start from them."""
        self.outputs[owner] = digests

    def list_ref(self, digest: str):
        """What a span's detail holds for its input list: the list's form there, or the
        digest of the stored list."""
        new_list = self.lists.get(digest)
        if new_list is None or new_list.in_span is None:
            return digest
        return new_list.in_span

    def redactions_of(self, digests) -> Counter:
        total = Counter()
        for digest in digests:
            counts = self.known.get(digest)
            if counts:
                total.update(counts)
        return total

    # --- storing ----------------------------------------------------------------------

    def _lookup(self, digests) -> None:
        """Mark those of the digests the database has already as known."""
        ordered = sorted(set(digests) - set(self.known))
        today = self.today.toordinal() - DayField.EPOCH
        for start in range(0, len(ordered), 500):
            chunk = [self.raw.get(d) or digest_bytes(d) for d in ordered[start : start + 500]]
            for raw, redactions, last_seen in payloads_stored(self.tenant_id, chunk):
                digest = digest_text(raw)
                self.known[digest] = orjson.loads(redactions) if redactions else None
                if last_seen < today:
                    self.stale.add(digest)
        for digest in list(self.new):
            if digest in self.known:
                del self.new[digest]
        for digest in list(self.lists):
            if digest in self.known:
                del self.lists[digest]

    def _externalise_leaves(self, value, leaves: list, scan: bool):
        """Long strings inside a message become VALUE payloads of their own."""
        if isinstance(value, str):
            if len(value) >= LEAF_MIN:
                digest = self.value(value, scan=scan)
                leaves.append(digest)
                return {LEAF_KEY: digest}
            return value
        if isinstance(value, list):
            return [self._externalise_leaves(v, leaves, scan) for v in value]
        if isinstance(value, dict):
            return {k: self._externalise_leaves(v, leaves, scan) for k, v in value.items()}
        return value

    def _redacted(self, value, scan: bool) -> tuple[bytes, Counter]:
        counts = Counter()
        if scan:
            value = self.redactor.redact_value(value, counts)
        return canonical(value), counts

    def prepare(self) -> list[PayloadRow]:
        """Redact, compress and upload what is new; return the rows to insert.

        Runs outside any database transaction: blob uploads can take seconds, and they
        happen before the rows that reference them commit.
        """
        wanted = list(self.new) + list(self.lists) + list(self.referenced)
        for new_list in self.lists.values():
            if new_list.cut is None:
                wanted.extend(new_list.prefixes)  # nothing in memory: ask the database
        self._lookup(wanted)

        messages = {d: new for d, new in self.new.items() if new.kind == PayloadKind.MESSAGE}
        shaped = {}
        for digest, new in messages.items():
            leaves: list[str] = []
            shaped[digest] = (self._externalise_leaves(new.raw, leaves, new.scan), leaves, new.scan)
        # Long strings found inside new messages may be stored already.
        self._lookup([d for d in self.new if d not in messages])

        bodies: dict[str, tuple[int, bytes, dict | None]] = {}
        for digest, new in self.new.items():
            if new.kind != PayloadKind.MESSAGE:
                body, counts = self._redacted(new.raw, new.scan)
                bodies[digest] = (new.kind, body, dict(counts) or None)
                self.known[digest] = dict(counts) or None
        for digest, (value, leaves, scan) in shaped.items():
            body, counts = self._redacted(value, scan)
            counts.update(self.redactions_of(leaves))
            bodies[digest] = (PayloadKind.MESSAGE, body, dict(counts) or None)
            self.known[digest] = dict(counts) or None
        bodies.update(self._list_bodies())

        today = Payload._meta.get_field("last_seen").get_db_prep_value(self.today, connection)
        key = Payload._meta.get_field("digest").get_db_prep_value
        rows, store = [], None
        serial = dictionaries.newest(self.tenant_id)
        if serial is None:
            samples = [body for kind, body, _ in bodies.values() if kind not in LIST_KINDS]
            serial = dictionaries.offer(self.tenant_id, samples)
        packer = dictionaries.Packer(self.tenant_id, dictionaries.Purpose.PAYLOAD, serial)
        for digest, (kind, body, redactions) in bodies.items():
            # List bodies are digests: they do not compress.
            packed = body if kind in LIST_KINDS else packer.pack(body)
            inline = packed if len(packed) <= INLINE_MAX else None
            if inline is None:
                store = store or get_blob_store()
                store.put(blob_key(self.tenant_id, digest), packed)
            rows.append(
                PayloadRow(
                    digest=key(self.raw[digest], connection),
                    tenant_id=self.tenant_id,
                    last_seen=today,
                    kind=kind,
                    data=inline,
                    redactions=json_param(redactions),
                )
            )
        # In digest order: two batches storing the same new payloads then wait for each
        # other in one order, never in a cycle.
        return sorted(rows, key=lambda row: row.digest)

    def _list_bodies(self) -> dict[str, tuple[int, bytes, None]]:
        """Put each new list in its span's detail where it can, and return the rows the
        others need: a LIST body for a list kept as a row, a SPAN_LIST body (the span's
        trace and id) for a list held by a span that later batches may continue."""
        heads: dict[str, tuple[str | None, list[str]]] = {}
        for digest, new_list in self.lists.items():
            items, prefixes = new_list.items, new_list.prefixes
            # Again, now that the whole batch is known: a later step may come first.
            cut = next(
                (
                    i
                    for i in range(len(prefixes) - 1, -1, -1)
                    if prefixes[i] in self.known or prefixes[i] in self.lists
                ),
                None,
            )
            heads[digest] = (prefixes[cut], items[cut + 1 :]) if cut is not None else (None, items)

        forms, continued, named = {}, set(), set()
        for digest, (head, rest) in heads.items():
            owners = self.lists[digest].owners
            if len(owners) != 1:
                named.add(head)  # a list kept as a row starts from a row
                continue
            previous = self.lists[head].owners if head in self.lists else []
            if len(previous) == 1 and previous[0][0] == owners[0][0]:
                out = self.outputs.get(previous[0], [])
                if rest[: len(out)] == out:
                    # The previous chat span of the trace: its input, its output, then this.
                    forms[digest] = {"p": previous[0][1], "i": rest[len(out) :]}
                    continued.add(head)
                    continue
            forms[digest] = {"h": head, "i": rest} if head is not None else {"i": rest}
            named.add(head)

        bodies = {}
        for digest, (head, rest) in heads.items():
            form = forms.get(digest)
            row = form is None or digest not in continued or digest in named
            if form is not None and ("p" in form or not row):
                self.lists[digest].in_span = form
            if not row:
                continue  # only this batch's next chat span starts from it
            if "p" in (form or {}):
                trace_id, span_id = self.lists[digest].owners[0]
                body = trace_id + span_id.to_bytes(8, "big", signed=True)
                bodies[digest] = (PayloadKind.SPAN_LIST, body, None)
            else:
                start = self.raw[head] if head is not None else bytes(DIGEST_BYTES)
                body = start + b"".join(self.raw[d] for d in rest)
                bodies[digest] = (PayloadKind.LIST, body, None)
            self.known[digest] = None
        return bodies

    def refresh_last_seen(self) -> None:
        if self.stale:
            Payload.objects.filter(digest__in=sorted(self.stale)).update(last_seen=self.today)

    def check_unswept(self) -> None:
        """In the batch's transaction, before it commits: raise PayloadsSwept if
        retention removed payloads since the batch read the count (it raises the count
        before it removes any), as the payloads the batch refers to may be among them."""
        if payload_sweeps(self.tenant_id) != self.sweeps:
            raise PayloadsSwept(f"tenant {self.tenant_id}: payloads removed meanwhile")

    def committed(self) -> None:
        """After commit: remember everything this batch stored or touched."""
        seen_cache.put(
            self.tenant_id, {d: (r, self.today, self.sweeps) for d, r in self.known.items()}
        )
