"""Agent bundles: a .tar.gz or .zip of Python code with a `flightdeck.toml` at its root.

A bundle is checked once on upload (every member, the manifest, the entrypoint) and
again, member by member, whenever it is unpacked for a run: the archive in the blob
store is trusted no more than the one uploaded.
"""

import ast
import gzip
import hashlib
import io
import math
import re
import stat
import struct
import tarfile
import tomllib
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from controlplane.blobstore import get_blob_store, tenant_key

MANIFEST = "flightdeck.toml"
_ENTRY = re.compile(
    r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*):([A-Za-z_][A-Za-z0-9_]*)$"
)
LIMIT_KEYS = {
    "wall_seconds",
    "cpu_seconds",
    "memory_mb",
    "max_processes",
    "max_file_mb",
    "max_steps",
    "max_tool_calls",
    "max_parallel_tools",
    "budget_tokens",
    "budget_usd",
    "loop_repeats",
}
RATE_KEYS = {"llm_per_minute", "tools_per_minute"}
MAX_PER_MINUTE = 1_000_000  # a token bucket's rate; more is no limit at all


class BundleError(ValueError):
    """The bundle is refused; the message says why."""


@dataclass
class Member:
    path: str  # normalised, relative
    data: bytes


def bundle_format(filename: str, data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return "tar.gz"
    if data[:4] == b"PK\x03\x04":
        return "zip"
    raise BundleError(f"{filename or 'the upload'} is neither a .tar.gz nor a .zip archive")


MAX_PATH_DEPTH = 32
MAX_NAME_BYTES = 255  # one path component, as the filesystems take it
# What one read of an archive may ask for. tarfile reads a PAX or GNU long-name header
# in one piece before any member check could run (a 1.5 MB upload can declare a 1.5 GB
# header), and members are read in chunks of this size, so a larger read is a hostile
# header.
MAX_READ_BYTES = 64 * 1024
# Headers and padding around each member of a tar: a 512-byte header, up to 511 bytes
# of padding, a PAX header with a path or extended attributes.
TAR_MEMBER_OVERHEAD = 8 * 1024
# A zip's central directory entry: 46 bytes, the name and its extras.
ZIP_ENTRY_BYTES = 256


def _shown(name: str) -> str:
    return repr(name if len(name) <= 120 else name[:120] + "...")


def _safe_path(name: str, *, folder: bool = False) -> str:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise BundleError(f"archive member {_shown(name)} leaves the bundle (path traversal)")
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts and not folder:  # "./", as `tar -C dir .` writes it, is the root
        raise BundleError(f"archive member {_shown(name)} has no name")
    if len(parts) > MAX_PATH_DEPTH:
        raise BundleError(
            f"archive member {_shown(name)} is nested more than {MAX_PATH_DEPTH} folders deep"
        )
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise BundleError(
            f"archive member {_shown(name)} has a name longer than {MAX_NAME_BYTES} bytes"
        )
    return "/".join(parts)


class _BoundedReader:
    """The decompressed tar stream, read through two bounds: no single read over
    MAX_READ_BYTES, and nothing past `limit` in all. A read past either is refused
    before it is made, so a hostile header is never held in memory."""

    def __init__(self, raw, limit: int):
        self.raw, self.limit = raw, limit

    def _within(self, end: int) -> None:
        if end > self.limit:
            raise BundleError(
                f"the archive unpacks to more than {self.limit} bytes (files, headers and padding)"
            )

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > MAX_READ_BYTES:
            raise BundleError(
                f"the archive holds a header of {size} bytes, over the limit of {MAX_READ_BYTES}"
            )
        self._within(self.raw.tell() + size)
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0:  # tarfile seeks to absolute offsets only
            raise io.UnsupportedOperation("only absolute seeks")
        self._within(offset)
        return self.raw.seek(offset)

    def tell(self) -> int:
        return self.raw.tell()


def _read_chunked(stream, size: int) -> bytes:
    chunks = []
    while size > 0 and (chunk := stream.read(min(size, MAX_READ_BYTES))):
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _zip_directory_check(data: bytes, max_files: int) -> None:
    """Refuse a zip whose central directory is too large before zipfile parses it:
    zipfile builds an object per entry, and a 5 MB upload can declare 60,000 of them.
    The end record is found as zipfile finds it."""
    at = len(data) - 22
    if not (at >= 0 and data[at : at + 4] == b"PK\x05\x06" and data[-2:] == b"\0\0"):
        at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))
    if at < 0 or at + 22 > len(data):
        raise BundleError("the archive cannot be read: the zip has no end of central directory")
    if at >= 20 and data[at - 20 : at - 16] == b"PK\x06\x07":
        raise BundleError("zip64 archives are not supported (bundles are small)")
    entries, directory_size = struct.unpack_from("<HI", data, at + 10)
    if entries > max_files or directory_size > max_files * ZIP_ENTRY_BYTES:
        raise BundleError(f"the bundle has more than {max_files} files")


def read_members(data: bytes, fmt: str) -> list[Member]:
    """Every file of the archive, refusing traversal, links, devices and oversize.
    Folders count against the file limit; what is read is bounded before it is read."""
    max_total = settings.EXECUTION_BUNDLE_MAX_UNPACKED_BYTES
    max_files = settings.EXECUTION_BUNDLE_MAX_FILES
    members: list[Member] = []
    total = entries = 0

    def count(name: str, *, folder: bool) -> str:
        nonlocal entries
        entries += 1
        if entries > max_files:
            raise BundleError(f"the bundle has more than {max_files} files")
        return _safe_path(name, folder=folder)

    def add(name: str, size: int, read) -> None:
        nonlocal total
        path = count(name, folder=False)
        total += size
        if total > max_total:
            raise BundleError(f"the bundle unpacks to more than {max_total} bytes")
        members.append(Member(path, read()))

    try:
        if fmt == "tar.gz":
            limit = max_total + (max_files + 1) * TAR_MEMBER_OVERHEAD
            stream = _BoundedReader(gzip.GzipFile(fileobj=io.BytesIO(data)), limit)
            with tarfile.open(fileobj=stream, mode="r:") as tar:
                for info in tar:
                    if info.isdir():
                        count(info.name, folder=True)
                        continue
                    if not info.isfile():
                        raise BundleError(
                            f"archive member {_shown(info.name)} is a link or device; "
                            "only files are allowed"
                        )
                    add(
                        info.name,
                        info.size,
                        lambda info=info: _read_chunked(tar.extractfile(info), info.size),
                    )
        else:
            _zip_directory_check(data, max_files)
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for info in zf.infolist():
                    mode = info.external_attr >> 16
                    if stat.S_ISLNK(mode):
                        raise BundleError(f"archive member {_shown(info.filename)} is a symlink")
                    if info.is_dir():
                        count(info.filename, folder=True)
                        continue
                    add(info.filename, info.file_size, lambda info=info: zf.read(info))
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise BundleError(f"the archive cannot be read: {exc}") from None
    seen = set()
    for member in members:
        if member.path in seen:
            raise BundleError(f"archive member {member.path!r} appears twice")
        seen.add(member.path)
    return members


def parse_manifest(members: list[Member]) -> dict:
    by_path = {m.path: m for m in members}
    if MANIFEST not in by_path:
        raise BundleError(f"the bundle has no {MANIFEST} at its root")
    try:
        raw = tomllib.loads(by_path[MANIFEST].data.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST} is not valid TOML: {exc}") from None

    entrypoint = raw.get("entrypoint")
    if not isinstance(entrypoint, str) or not (match := _ENTRY.match(entrypoint)):
        raise BundleError(f"{MANIFEST}: entrypoint must be 'module:function', got {entrypoint!r}")
    module, function = match.groups()
    module_path = module.replace(".", "/")
    source = by_path.get(f"{module_path}.py") or by_path.get(f"{module_path}/__init__.py")
    if source is None:
        raise BundleError(f"{MANIFEST}: entrypoint module {module!r} is not in the bundle")
    try:
        tree = ast.parse(source.data, filename=source.path)
    except SyntaxError as exc:
        raise BundleError(f"entrypoint module {source.path} does not parse: {exc}") from None
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    if function not in functions:
        raise BundleError(f"entrypoint function {function!r} is not defined in {source.path}")
    if len(functions[function].args.args) != 2:
        raise BundleError(f"entrypoint {entrypoint} must take two arguments: (ctx, input)")

    tools = raw.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise BundleError(f"{MANIFEST}: tools must be a list of tool names")
    model = raw.get("model", settings.EXECUTION_DEFAULT_MODEL)
    if not isinstance(model, str) or not model:
        raise BundleError(f"{MANIFEST}: model must be a model name")
    limits = raw.get("limits", {})
    if not isinstance(limits, dict):
        raise BundleError(f"{MANIFEST}: [limits] must be a table")
    limits = check_limits(limits, where=f"{MANIFEST} [limits]")
    rates = check_rate_limits(raw.get("rate_limits", {}), where=f"{MANIFEST} [rate_limits]")
    input_schema = raw.get("input_schema")
    if input_schema is not None:
        if not isinstance(input_schema, dict):
            raise BundleError(f"{MANIFEST}: [input_schema] must be a table (a JSON schema)")
        try:
            Draft202012Validator.check_schema(input_schema)
        except SchemaError as exc:
            raise BundleError(
                f"{MANIFEST} [input_schema] is not a valid JSON schema: {exc.message}"
            ) from None
    return {
        "entrypoint": entrypoint,
        "model": model,
        "tools": tools,
        "limits": limits,
        "rate_limits": rates,
        "description": str(raw.get("description", ""))[:500],
        "input_schema": input_schema,
    }


def input_problem(manifest: dict, value) -> str | None:
    """What the manifest's [input_schema] refuses in a run's input (None: accepted)."""
    schema = manifest.get("input_schema")
    if schema is None:
        return None
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return None
    where = "".join(f"[{p!r}]" for p in errors[0].path)
    return f"input{where}: {errors[0].message}"


def _whole(value, *, where: str, key: str, maximum: int) -> int:
    """A positive whole number up to `maximum`. 2.0 is 2; 0.5, nan, inf and "x" are
    refused here rather than failing the run later (cgroups and rlimits take integers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BundleError(f"{where}: {key} must be a positive whole number, got {value!r}")
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise BundleError(f"{where}: {key} must be a positive whole number, got {value!r}")
    if value <= 0:
        raise BundleError(f"{where}: {key} must be a positive whole number, got {value!r}")
    if value > maximum:
        raise BundleError(f"{where}: {key}={value!r} is above the platform maximum {maximum}")
    return int(value)


def _usd(value, *, where: str, key: str, maximum: int) -> float:
    """A positive amount of money up to `maximum` (budget_usd: billing holds it)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise BundleError(f"{where}: {key} must be a positive amount of USD, got {value!r}")
    if value > maximum:
        raise BundleError(f"{where}: {key}={value!r} is above the platform maximum {maximum}")
    return float(value)


def check_limits(limits: dict, *, where: str) -> dict:
    """The limits as whole numbers (budget_usd as USD); BundleError names the first bad one."""
    unknown = set(limits) - LIMIT_KEYS
    if unknown:
        raise BundleError(
            f"{where}: unknown limits {sorted(unknown)} (known: {sorted(LIMIT_KEYS)})"
        )
    maxima = settings.EXECUTION_MAX_LIMITS
    return {
        key: (_usd if key == "budget_usd" else _whole)(
            value, where=where, key=key, maximum=maxima[key]
        )
        for key, value in limits.items()
    }


def check_rate_limits(rates, *, where: str) -> dict:
    if not isinstance(rates, dict):
        raise BundleError(f"{where} must be a table")
    unknown = set(rates) - RATE_KEYS
    if unknown:
        raise BundleError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(RATE_KEYS)})")
    return {
        key: _whole(value, where=where, key=key, maximum=MAX_PER_MINUTE)
        for key, value in rates.items()
    }


def bundle_check(*, filename: str, data: bytes) -> tuple[str, dict]:
    """(format, manifest) of a valid bundle; BundleError says what is wrong."""
    if len(data) > settings.EXECUTION_BUNDLE_MAX_BYTES:
        raise BundleError(
            f"the bundle is {len(data)} bytes, over the limit of "
            f"{settings.EXECUTION_BUNDLE_MAX_BYTES}"
        )
    fmt = bundle_format(filename, data)
    return fmt, parse_manifest(read_members(data, fmt))


def bundle_key(tenant_id: int, sha256: str, fmt: str) -> str:
    return tenant_key(tenant_id, "bundles", sha256[:2], f"{sha256}.{fmt}")


def bundle_store(*, tenant_id: int, data: bytes, fmt: str) -> str:
    """Store once per tenant under its SHA-256; returns the hash."""
    sha = hashlib.sha256(data).hexdigest()
    store = get_blob_store()
    key = bundle_key(tenant_id, sha, fmt)
    if not store.exists(key):
        store.put(key, data)
    return sha


def bundle_unpack(*, tenant_id: int, sha256: str, fmt: str, dest: Path) -> None:
    data = get_blob_store().get(bundle_key(tenant_id, sha256, fmt))
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError("the stored bundle does not match its hash")
    for member in read_members(data, fmt):
        target = dest / member.path
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        target.write_bytes(member.data)
        target.chmod(0o644)
