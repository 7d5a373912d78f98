"""The RESP parser and encoders, without a server."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcache_svc.transport.resp_protocol import (
    MAX_HEADER,
    ErrorReply,
    ProtocolError,
    Reply,
    RespParser,
    Simple,
    array,
    boolean,
    bulk,
    double,
    encode,
    error,
    integer,
    map_,
    null,
    simple,
    split_inline,
)


def multibulk(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def drain(parser: RespParser) -> list[list[bytes]]:
    out: list[list[bytes]] = []
    while (command := parser.get()) is not None:
        out.append(command)
    return out


def parse(data: bytes, **limits: int) -> list[list[bytes]]:
    parser = RespParser(**limits)
    parser.feed(data)
    return drain(parser)


# -- multibulk -------------------------------------------------------------------------------


def test_one_command_and_a_pipeline() -> None:
    assert parse(multibulk(b"PING")) == [[b"PING"]]
    data = multibulk(b"MC.SET", b"t", b"m", b"q", b"a") + multibulk(b"MC.GET", b"t", b"m", b"q") + multibulk(b"PING")
    assert parse(data) == [[b"MC.SET", b"t", b"m", b"q", b"a"], [b"MC.GET", b"t", b"m", b"q"], [b"PING"]]


def test_bulk_strings_are_binary_safe() -> None:
    payload = b"a\r\nb\x00\xff*1\r\n$"
    assert parse(multibulk(b"ECHO", payload)) == [[b"ECHO", payload]]
    assert parse(multibulk(b"ECHO", b"")) == [[b"ECHO", b""]]


def test_empty_and_null_arrays_are_skipped() -> None:
    assert parse(b"*0\r\n*-1\r\n" + multibulk(b"PING")) == [[b"PING"]]


def test_truncated_frames_fed_byte_by_byte_wait_for_the_rest() -> None:
    commands = [[b"MC.QUERY", b"t", b"m", b'[{"role":"user","content":"hi"}]'], [b"PING"], [b"ECHO", b"x\r\ny"]]
    data = b"".join(multibulk(*c) for c in commands) + b'PING\r\nECHO "a b"\n'
    parser = RespParser()
    got: list[list[bytes]] = []
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        got.extend(drain(parser))
    assert got == [*commands, [b"PING"], [b"ECHO", b"a b"]]
    assert parser.buffered == 0


def test_every_proper_prefix_of_a_frame_is_incomplete_not_an_error() -> None:
    frame = multibulk(b"MC.SET", b"tenant", b"model", b"question", b"answer")
    for cut in range(len(frame)):
        assert parse(frame[:cut]) == []
    assert parse(frame) == [[b"MC.SET", b"tenant", b"model", b"question", b"answer"]]


# -- limits ------------------------------------------------------------------------------------


def test_an_oversized_bulk_is_refused_when_declared() -> None:
    parser = RespParser(max_bulk=10)
    parser.feed(b"*2\r\n$4\r\nECHO\r\n$11\r\n")  # none of the 11 bytes sent yet
    with pytest.raises(ProtocolError, match="invalid bulk length"):
        parser.get()
    assert parse(b"*1\r\n$10\r\n0123456789\r\n", max_bulk=10) == [[b"0123456789"]]


def test_an_oversized_array_is_refused_when_declared() -> None:
    with pytest.raises(ProtocolError, match="invalid multibulk length"):
        parse(b"*9\r\n", max_array=8)
    assert len(parse(multibulk(*[b"x"] * 8), max_array=8)[0]) == 8


def test_a_request_over_the_total_limit_is_refused() -> None:
    with pytest.raises(ProtocolError, match="request too large"):
        parse(b"*3\r\n$8\r\n12345678\r\n$8\r\n12345678\r\n$8\r\n", max_bulk=8, max_request=20)


def test_endless_header_and_inline_lines_are_refused() -> None:
    with pytest.raises(ProtocolError, match="too big multibulk count"):
        parse(b"*" + b"1" * (MAX_HEADER + 1))
    with pytest.raises(ProtocolError, match="too big bulk count"):
        parse(b"*1\r\n$" + b"9" * (MAX_HEADER + 1))
    with pytest.raises(ProtocolError, match="too big inline request"):
        parse(b"PING " + b"x" * 200, max_inline=100)
    with pytest.raises(ProtocolError, match="too big inline request"):
        parse(b"PING " + b"x" * 200 + b"\r\n", max_inline=100)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"*1\r\n:5\r\n", "expected '\\$'"),
        (b"*1\r\n$3\r\nabcX\r\n", "not followed by CRLF"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"* 1\r\n", "invalid multibulk length"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$1_0\r\n", "invalid bulk length"),
        (b"*1\r\n$99999999999999999999999\r\n", "invalid bulk length"),
        (b'SET "a\r\n', "unbalanced quotes"),
        (b'SET "a"b\r\n', "unbalanced quotes"),
        (b"SET 'a\r\n", "unbalanced quotes"),
    ],
)
def test_framing_errors(data: bytes, message: str) -> None:
    parser = RespParser()
    parser.feed(data)
    with pytest.raises(ProtocolError, match=message):
        parser.get()
    # The stream cannot be resynchronised: the parser stays failed and holds nothing.
    parser.feed(multibulk(b"PING"))
    with pytest.raises(ProtocolError):
        parser.get()
    assert parser.buffered == 0


# -- inline ------------------------------------------------------------------------------------


def test_inline_commands() -> None:
    assert parse(b"PING\r\n") == [[b"PING"]]
    assert parse(b"ping\n\r\n\n  \r\nECHO hello\n") == [[b"ping"], [b"ECHO", b"hello"]]
    assert parse(b"MC.SET t m 'a question' \"an\\tanswer\\x41\\n\"\r\n") == [
        [b"MC.SET", b"t", b"m", b"a question", b"an\tanswerA\n"]
    ]


def test_split_inline_quotes_as_redis() -> None:
    assert split_inline(b"  a   b\tc ") == [b"a", b"b", b"c"]
    assert split_inline(b"\"\" ''") == [b"", b""]
    assert split_inline(b"'it\\'s' \"q\\\"uote\"") == [b"it's", b'q"uote']
    assert split_inline(b'"\\xZZ"') == [b"xZZ"]
    assert split_inline(b'a"b c"') == [b"ab c"]
    assert split_inline(b"") == []


# -- encoders ------------------------------------------------------------------------------------


def test_scalar_encoders() -> None:
    assert simple("OK") == b"+OK\r\n"
    assert simple("a\r\nb") == b"+a  b\r\n"
    assert error("ERR bad\nthing") == b"-ERR bad thing\r\n"
    assert integer(-42) == b":-42\r\n"
    assert bulk("héllo") == b"$6\r\nh\xc3\xa9llo\r\n"
    assert bulk(b"") == b"$0\r\n\r\n"
    assert null(2) == b"$-1\r\n" and null(3) == b"_\r\n"
    assert boolean(True, 3) == b"#t\r\n" and boolean(False, 3) == b"#f\r\n"
    assert boolean(True, 2) == b":1\r\n" and boolean(False, 2) == b":0\r\n"
    assert double(0.5, 3) == b",0.5\r\n" and double(0.5, 2) == b"$3\r\n0.5\r\n"
    assert double(math.inf, 3) == b",inf\r\n" and double(-math.inf, 3) == b",-inf\r\n"
    assert double(math.nan, 3) == b",nan\r\n"


def test_aggregate_encoders() -> None:
    assert array([integer(1), bulk("a")]) == b"*2\r\n:1\r\n$1\r\na\r\n"
    assert map_([(bulk("k"), integer(1))], 3) == b"%1\r\n$1\r\nk\r\n:1\r\n"
    assert map_([(bulk("k"), integer(1))], 2) == b"*2\r\n$1\r\nk\r\n:1\r\n"
    value: Reply = {"hit": True, "similarity": 0.25, "ids": ["a"], "none": None}
    assert (
        encode(value, 3)
        == b"%4\r\n$3\r\nhit\r\n#t\r\n$10\r\nsimilarity\r\n,0.25\r\n$3\r\nids\r\n*1\r\n$1\r\na\r\n$4\r\nnone\r\n_\r\n"
    )
    assert encode(value, 2) == (
        b"*8\r\n$3\r\nhit\r\n:1\r\n$10\r\nsimilarity\r\n$4\r\n0.25\r\n$3\r\nids\r\n*1\r\n$1\r\na\r\n$4\r\nnone\r\n$-1\r\n"
    )
    assert encode(Simple("PONG"), 2) == b"+PONG\r\n"
    assert encode(ErrorReply("NOPERM no"), 3) == b"-NOPERM no\r\n"
    with pytest.raises(TypeError):
        encode(object(), 2)  # type: ignore[arg-type]


class _Decoder:
    """Just enough of a RESP3 reply reader to check the encoders against."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def line(self) -> bytes:
        end = self.data.index(b"\r\n", self.pos)
        out, self.pos = self.data[self.pos : end], end + 2
        return out

    def read(self) -> Any:
        head = self.line()
        kind, rest = head[:1], head[1:]
        if kind == b"+":
            return Simple(rest.decode())
        if kind == b"-":
            return ErrorReply(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b",":
            return float(rest)
        if kind == b"#":
            return rest == b"t"
        if kind == b"_":
            return None
        if kind == b"$":
            n = int(rest)
            out, self.pos = self.data[self.pos : self.pos + n], self.pos + n + 2
            return out.decode("utf-8", "surrogatepass")
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        if kind == b"%":
            return {self.read(): self.read() for _ in range(int(rest))}
        raise AssertionError(head)


replies = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(replies)
def test_resp3_encoding_round_trips(value: Any) -> None:
    data = encode(value, 3)
    decoder = _Decoder(data)
    assert decoder.read() == value
    assert decoder.pos == len(data)


# -- fuzz ------------------------------------------------------------------------------------------

LIMITS = {"max_bulk": 64, "max_array": 8, "max_request": 256, "max_inline": 128}
# What a parser may hold once drained: the largest partial command.
HELD = LIMITS["max_request"] + LIMITS["max_array"] * (MAX_HEADER + 4) + MAX_HEADER + LIMITS["max_inline"]

args_st = st.lists(st.binary(max_size=20), min_size=1, max_size=5)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Valid frames, truncated frames, noise and inline lines, glued and cut at random points."""
    parts = draw(
        st.lists(
            st.one_of(
                args_st.map(lambda a: multibulk(*a)),
                st.tuples(args_st, st.integers(min_value=0, max_value=200)).map(lambda t: multibulk(*t[0])[: t[1]]),
                st.binary(max_size=64),
                st.sampled_from([b"*", b"$", b"\r\n", b"\n", b"*99999\r\n", b"*1\r\n$999\r\n", b"'", b'"', b"*-3\r\n"]),
                st.text(alphabet=" abc'\"\\x\t", max_size=30).map(lambda s: s.encode() + b"\r\n"),
            ),
            max_size=12,
        )
    )
    data = b"".join(parts)
    cuts = sorted(draw(st.lists(st.integers(min_value=0, max_value=len(data)), max_size=10)))
    return data, cuts


@settings(max_examples=400, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_fuzz_random_and_truncated_frames(stream: tuple[bytes, list[int]]) -> None:
    data, cuts = stream
    parser = RespParser(**LIMITS)
    bounds = [0, *cuts, len(data)]
    commands = 0
    try:
        for start, end in itertools.pairwise(bounds):
            chunk = data[start:end]
            parser.feed(chunk)
            # Each command consumes at least two bytes, so this loop cannot spin.
            while (command := parser.get()) is not None:
                commands += 1
                assert commands <= len(data)
                assert 1 <= len(command) <= LIMITS["max_array"]
                assert all(len(arg) <= max(LIMITS["max_bulk"], LIMITS["max_inline"]) for arg in command)
            assert parser.buffered <= HELD
    except ProtocolError:
        assert parser.buffered == 0


@settings(max_examples=200, deadline=2000)
@given(st.lists(args_st, max_size=6), st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20))
def test_fuzz_valid_pipelines_survive_any_chunking(commands: list[list[bytes]], sizes: list[int]) -> None:
    data = b"".join(multibulk(*c) for c in commands)
    parser = RespParser(**LIMITS)
    got: list[list[bytes]] = []
    pos, i = 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        parser.feed(data[pos : pos + size])
        got.extend(drain(parser))
        pos, i = pos + size, i + 1
    assert got == commands
    assert parser.buffered == 0
