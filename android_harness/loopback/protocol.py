"""The adb transport protocol, as a device speaks it over TCP.

Reference: AOSP `packages/modules/adb/protocol.txt`. A message is a 24-byte header of six
little-endian uint32 — command, arg0, arg1, data_length, data_check (byte sum), magic
(command ^ 0xffffffff) — followed by `data_length` bytes of payload.

    pack(A_OKAY, 1, 7)  ->  24 bytes, no payload
    unpack_header(header)  ->  Header(command=A_OKAY, arg0=1, arg1=7, length=0, check=0)

Shell protocol v2 (`shell,v2:` services) frames each stream chunk as [id:u8][length:u32 LE][data].
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = [
    "A_CNXN",
    "A_OPEN",
    "A_OKAY",
    "A_WRTE",
    "A_CLSE",
    "A_AUTH",
    "A_STLS",
    "A_SYNC",
    "A_VERSION",
    "MAX_PAYLOAD",
    "HEADER_SIZE",
    "Header",
    "pack",
    "unpack_header",
    "ProtocolError",
    "SHELL_STDIN",
    "SHELL_STDOUT",
    "SHELL_STDERR",
    "SHELL_EXIT",
    "SHELL_CLOSE_STDIN",
    "shell_v2_packet",
]


def _cmd(name: bytes) -> int:
    return struct.unpack("<I", name)[0]


A_SYNC = _cmd(b"SYNC")
A_CNXN = _cmd(b"CNXN")
A_OPEN = _cmd(b"OPEN")
A_OKAY = _cmd(b"OKAY")
A_CLSE = _cmd(b"CLSE")
A_WRTE = _cmd(b"WRTE")
A_AUTH = _cmd(b"AUTH")
A_STLS = _cmd(b"STLS")

A_VERSION = 0x01000001  # the version that made data_check optional; we still fill it in
MAX_PAYLOAD = 256 * 1024  # what a modern adbd advertises
HEADER_SIZE = 24

SHELL_STDIN = 0
SHELL_STDOUT = 1
SHELL_STDERR = 2
SHELL_EXIT = 3
SHELL_CLOSE_STDIN = 4


class ProtocolError(RuntimeError):
    """The peer sent bytes that are not an adb message."""


@dataclass(frozen=True)
class Header:
    command: int
    arg0: int
    arg1: int
    length: int
    check: int

    @property
    def name(self) -> str:
        return struct.pack("<I", self.command).decode("ascii", errors="replace")


def pack(command: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    """One complete message: header + payload."""
    check = sum(data) & 0xFFFFFFFF
    header = struct.pack(
        "<6I", command, arg0, arg1, len(data), check, command ^ 0xFFFFFFFF
    )
    return header + data


def unpack_header(raw: bytes) -> Header:
    if len(raw) != HEADER_SIZE:
        raise ProtocolError(f"adb header must be {HEADER_SIZE} bytes, got {len(raw)}")
    command, arg0, arg1, length, check, magic = struct.unpack("<6I", raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad adb magic {magic:#x} for command {command:#x}")
    return Header(command, arg0, arg1, length, check)


def shell_v2_packet(stream_id: int, data: bytes) -> bytes:
    return struct.pack("<BI", stream_id, len(data)) + data
