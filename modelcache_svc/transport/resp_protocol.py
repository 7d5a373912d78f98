"""The Redis serialization protocol (RESP2 and RESP3), without any I/O.

``RespParser`` is fed the bytes a client sends and hands back complete commands
(lists of byte strings), one at a time; it never holds more than one partial
command plus the last chunk fed. ``encode`` and the small functions beside it
turn reply values into RESP2 or RESP3 bytes.

What a client may send, as Redis accepts it:
- multibulk: ``*<n>\\r\\n`` then n times ``$<len>\\r\\n<bytes>\\r\\n``;
- inline: one text line (``\\n`` or ``\\r\\n``) split on whitespace, with
  "double" (C escapes, ``\\xHH``) and 'single' quotes, as redis-cli and telnet send.

Every size is checked when it is declared, before the bytes arrive, so a client
cannot make us buffer more than the limits below. A framing error raises
``ProtocolError``; after one the stream cannot be resynchronised, so the
parser stays failed and the connection must be closed (as Redis does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

# A bulk string, as Redis's proto-max-bulk-len but smaller: one cache entry
# (messages JSON or answer) fits well within it.
DEFAULT_MAX_BULK = 16 * 1024 * 1024
# Elements of one command. The longest legitimate command is MC.REMOVE with
# 1000 ids (Limits.max_ids_per_remove) plus 3; 4096 leaves room and keeps the
# per-element bookkeeping of a hostile declaration small.
DEFAULT_MAX_ARRAY = 4096
# Bytes declared by all bulk strings of one command together: without it,
# max_array * max_bulk (64 GiB) would be the only bound.
DEFAULT_MAX_REQUEST = 64 * 1024 * 1024
# An inline command line, as Redis's PROTO_INLINE_MAX_SIZE.
DEFAULT_MAX_INLINE = 64 * 1024
# A "*<n>" or "$<len>" header: a sign and 19 digits fit in far less.
MAX_HEADER = 32

Command: TypeAlias = list[bytes]


class ProtocolError(Exception):
    """The byte stream is not RESP (or breaks a limit); the connection must close."""


class Simple(str):
    """A reply sent as a RESP simple string (+OK) instead of a bulk string."""


class ErrorReply(str):
    """A reply sent as a RESP error: the text starts with its code (ERR, NOAUTH, ...)."""


Reply: TypeAlias = (
    "None | bool | int | float | str | bytes | bytearray | Simple | ErrorReply | Sequence[Reply] | Mapping[str, Reply]"
)


def _parse_int(text: bytes | bytearray) -> int | None:
    """A strict decimal: int() would also take '+5', ' 5' and '5_0'."""
    digits = text[1:] if text[:1] == b"-" else text
    if not digits or len(digits) > 19 or not digits.isdigit():
        return None
    return int(text)


class RespParser:
    """Incremental parser of client commands. Feed bytes, then call ``get`` until it returns None."""

    def __init__(
        self,
        *,
        max_bulk: int = DEFAULT_MAX_BULK,
        max_array: int = DEFAULT_MAX_ARRAY,
        max_request: int = DEFAULT_MAX_REQUEST,
        max_inline: int = DEFAULT_MAX_INLINE,
    ) -> None:
        self.max_bulk = max_bulk
        self.max_array = max_array
        self.max_request = max_request
        self.max_inline = max_inline
        self._buf = bytearray()
        self._pos = 0  # start of unconsumed bytes
        self._scan = 0  # where the next line search starts, so byte-by-byte feeding stays linear
        self._args: list[bytes] | None = None  # inside a multibulk when not None
        self._want = 0  # elements still to read
        self._bulk = -1  # length of the bulk being waited for; -1 = its header comes next
        self._declared = 0
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held. After ``get`` returned None, only the pending partial command, so at most
        about max_request plus the headers (or max_inline for an inline line)."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        if self._error is None:  # after a framing error the bytes mean nothing; do not hold them
            self._buf += data

    def get(self) -> Command | None:
        """The next complete command, or None until more bytes arrive. Raises ProtocolError."""
        if self._error is not None:
            raise self._error
        try:
            command = self._next()
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        # Drop consumed bytes when waiting for more (so only the partial command stays held), but
        # not after every command of a long pipeline, which would move the rest each time.
        if self._pos and (command is None or self._pos == len(self._buf) or self._pos > 65536):
            del self._buf[: self._pos]
            self._scan = max(0, self._scan - self._pos)
            self._pos = 0
        return command

    def _next(self) -> Command | None:
        buf = self._buf
        while True:
            if self._args is None:
                if self._pos >= len(buf):
                    return None
                if buf[self._pos] != ord("*"):
                    args = self._inline()
                    if args is None:
                        return None
                    if args:  # a blank line is skipped, as Redis does
                        return args
                    continue
                header = self._line(b"\r\n", MAX_HEADER, "multibulk count")
                if header is None:
                    return None
                count = _parse_int(header[1:])
                if count is None or count > self.max_array:
                    raise ProtocolError("invalid multibulk length")
                if count <= 0:  # *0 and *-1 carry no command; Redis skips them
                    continue
                self._args, self._want, self._bulk, self._declared = [], count, -1, 0
            if self._bulk < 0:
                if self._pos >= len(buf):
                    return None
                if buf[self._pos] != ord("$"):
                    raise ProtocolError(f"expected '$', got {chr(buf[self._pos])!r}")
                header = self._line(b"\r\n", MAX_HEADER, "bulk count")
                if header is None:
                    return None
                length = _parse_int(header[1:])
                if length is None or length < 0 or length > self.max_bulk:
                    raise ProtocolError("invalid bulk length")
                self._declared += length
                if self._declared > self.max_request:
                    raise ProtocolError("request too large")
                self._bulk = length
            end = self._pos + self._bulk
            if len(buf) < end + 2:
                return None
            if buf[end : end + 2] != b"\r\n":
                raise ProtocolError("bulk string not followed by CRLF")
            self._args.append(bytes(memoryview(buf)[self._pos : end]))
            self._pos = self._scan = end + 2
            self._bulk = -1
            self._want -= 1
            if self._want == 0:
                args, self._args = self._args, None
                return args

    def _line(self, end: bytes, limit: int, what: str) -> bytes | None:
        """The line at the read position without its terminator, or None while incomplete."""
        start = self._pos
        at = self._buf.find(end, max(start, self._scan))
        if at < 0:
            if len(self._buf) - start > limit:
                raise ProtocolError(f"too big {what}")
            # The terminator may straddle two feeds: search again from its possible start.
            self._scan = max(start, len(self._buf) - len(end) + 1)
            return None
        if at - start > limit:
            raise ProtocolError(f"too big {what}")
        self._pos = self._scan = at + len(end)
        return bytes(self._buf[start:at])

    def _inline(self) -> Command | None:
        line = self._line(b"\n", self.max_inline, "inline request")
        if line is None:
            return None
        if line.endswith(b"\r"):
            line = line[:-1]
        args = split_inline(line)
        if len(args) > self.max_array:
            raise ProtocolError("invalid multibulk length")
        return args


_SPACE = b" \t\n\r\v\f"
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
_HEX = b"0123456789abcdefABCDEF"


def split_inline(line: bytes) -> Command:
    """Split an inline command as Redis's sdssplitargs does. Raises ProtocolError on bad quoting."""
    args: Command = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _SPACE:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        quote = 0  # the open quote character, 0 when outside quotes
        while True:
            if i >= n:
                if quote:
                    raise ProtocolError("unbalanced quotes in request")
                break
            c = line[i]
            if quote == ord('"'):
                if c == ord("\\") and i + 3 < n and line[i + 1] == ord("x") and _is_hex(line[i + 2 : i + 4]):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == ord("\\") and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == quote:
                    # A closing quote must end the argument: "foo"bar is an error in Redis too.
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    quote = 0
                    i += 1
                    break
                else:
                    current.append(c)
            elif quote == ord("'"):
                if c == ord("\\") and i + 1 < n and line[i + 1] == ord("'"):
                    current.append(ord("'"))
                    i += 1
                elif c == quote:
                    if i + 1 < n and line[i + 1] not in _SPACE:
                        raise ProtocolError("unbalanced quotes in request")
                    quote = 0
                    i += 1
                    break
                else:
                    current.append(c)
            elif c in _SPACE:
                break
            elif c in (ord('"'), ord("'")):
                quote = c
            else:
                current.append(c)
            i += 1
        args.append(bytes(current))


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and pair[0] in _HEX and pair[1] in _HEX


# -- encoders -----------------------------------------------------------------------------


def _text(value: str | bytes | bytearray) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else bytes(value)


def _one_line(value: str | bytes) -> bytes:
    # A simple string or error ends at the first CR/LF: any inside would break framing.
    return _text(value).replace(b"\r", b" ").replace(b"\n", b" ")


def simple(value: str | bytes) -> bytes:
    return b"+" + _one_line(value) + b"\r\n"


def error(message: str | bytes) -> bytes:
    return b"-" + _one_line(message) + b"\r\n"


def integer(value: int) -> bytes:
    return b":%d\r\n" % value


def bulk(value: str | bytes | bytearray) -> bytes:
    data = _text(value)
    return b"$%d\r\n%s\r\n" % (len(data), data)


def null(proto: int) -> bytes:
    return b"_\r\n" if proto >= 3 else b"$-1\r\n"


def array(items: Sequence[bytes]) -> bytes:
    """An array of already encoded replies."""
    return b"*%d\r\n" % len(items) + b"".join(items)


def map_(pairs: Sequence[tuple[bytes, bytes]], proto: int) -> bytes:
    """A map of already encoded keys and values; RESP2 has no map, so a flat array."""
    head = b"%%%d\r\n" % len(pairs) if proto >= 3 else b"*%d\r\n" % (2 * len(pairs))
    return head + b"".join(k + v for k, v in pairs)


def double(value: float, proto: int) -> bytes:
    if math.isnan(value):
        text = b"nan"
    elif math.isinf(value):
        text = b"inf" if value > 0 else b"-inf"
    else:
        text = repr(float(value)).encode()
    return b"," + text + b"\r\n" if proto >= 3 else bulk(text)


def boolean(value: bool, proto: int) -> bytes:
    if proto >= 3:
        return b"#t\r\n" if value else b"#f\r\n"
    return integer(1 if value else 0)


def encode(value: Reply, proto: int) -> bytes:
    """One reply value in RESP2 or RESP3: str and bytes become bulk strings."""
    if value is None:
        return null(proto)
    if isinstance(value, ErrorReply):
        return error(value)
    if isinstance(value, Simple):
        return simple(value)
    if isinstance(value, bool):  # before int: bool is an int
        return boolean(value, proto)
    if isinstance(value, int):
        return integer(value)
    if isinstance(value, float):
        return double(value, proto)
    if isinstance(value, (str, bytes, bytearray)):
        return bulk(value)
    if isinstance(value, Mapping):
        return map_([(bulk(k), encode(v, proto)) for k, v in value.items()], proto)
    if isinstance(value, Sequence):
        return array([encode(v, proto) for v in value])
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")
