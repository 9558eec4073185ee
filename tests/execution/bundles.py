"""Odd and hostile archives for the bundle tests."""

import io
import struct
import tarfile
import zipfile
import zlib

# Plain bundles, agents and in-process runs live in execution.testing (the benchmark
# uses them too); the tests import them from here, beside the archives.
from execution.testing import agent_with_bundle, make_bundle, run_now  # noqa: F401


def tar_with_symlink(name: str, target: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        manifest = b'entrypoint = "agent:main"\n'
        info = tarfile.TarInfo("flightdeck.toml")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        link = tarfile.TarInfo(name)
        link.type = tarfile.SYMTYPE
        link.linkname = target
        tar.addfile(link)
    return buf.getvalue()


def tar_gz_with_pax_header(size: int, byte: bytes = b"a") -> bytes:
    """A .tar.gz whose first member carries a PAX extended header of `size` bytes (one
    repeated byte), built without holding it: after a full flush, a deflate block does not
    depend on what came before, so one compressed mebibyte is repeated as often as needed."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = size
    head = header.tobuf(format=tarfile.USTAR_FORMAT)
    chunk = byte * (1 << 20)

    def deflated(data: bytes) -> bytes:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)

    whole, rest = divmod(size, len(chunk))
    crc = zlib.crc32(head)
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(chunk[:rest], crc)
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    return b"".join(
        [
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",  # gzip header, no name, no mtime
            deflated(head),
            deflated(chunk) * whole,
            deflated(chunk[:rest]),
            end,
            struct.pack("<II", crc, (len(head) + size) & 0xFFFFFFFF),
        ]
    )


def tar_gz_with_long_name(length: int) -> bytes:
    """A .tar.gz whose first member has a GNU long name of `length` bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("a" * length)
        tar.addfile(info, io.BytesIO(b""))
    return buf.getvalue()


def tar_gz_with_folders(files: dict[str, str], folders: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in folders:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def zip_with_entries(count: int) -> bytes:
    """A zip of `count` empty files: small to upload, one zipfile object per entry."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(count):
            zf.writestr(f"{i:x}", b"")
    return buf.getvalue()


def zip_bomb(size: int) -> bytes:
    """A zip whose one member deflates `size` zero bytes into a few kilobytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("flightdeck.toml", 'entrypoint = "agent:main"\n')
        with zf.open("agent.py", "w", force_zip64=False) as member:
            for _ in range(size >> 20):
                member.write(bytes(1 << 20))
    return buf.getvalue()
