"""ASCII armor for age files: strict PEM-like encoding (age spec, "ASCII armor").

::

    -----BEGIN AGE ENCRYPTED FILE-----
    <standard padded base64 of the binary file, 64 columns per line>
    <last line: 1..64 columns>
    -----END AGE ENCRYPTED FILE-----

The decoder is strict so that one age file has one armored form (no malleability,
no smuggled content): no PEM headers, no empty lines, no whitespace inside or
around lines, canonical base64 with padding, only full 64-column lines before the
last one. What is allowed, as in the reference implementation and the test
vectors: up to 1 KiB of whitespace before the BEGIN line and after the END line,
CRLF line endings, and a missing newline after the END line.

Both directions stream with bounded memory (a line at a time). The decoder hands
decoded bytes on as soon as a line is validated; that is safe because the payload
decryptor releases nothing that has not authenticated, and ``AgeDecryptor`` opens
the final chunk only after ``ArmorDecoder.finalize`` has confirmed the armor ended
properly (so a cut-off armored file never yields its last chunk).
"""

from __future__ import annotations

import base64
import binascii

from datamove.age.errors import ArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_LINE_BYTES = COLUMNS // 4 * 3  # 48 bytes of data per full line
_MAX_WHITESPACE = 1024
_MAX_PARTIAL_LINE = 4096  # a "line" longer than this without LF is garbage, not buffered
_WHITESPACE = b" \t\n\r\v\f"

_BEFORE, _BODY, _EXPECT_END, _AFTER = range(4)


class ArmorEncoder:
    """Armor a binary age stream: ``update`` returns complete lines, ``finalize`` the rest."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._started = False
        self._done = False

    def _lines(self, data: bytes) -> bytes:
        text = base64.b64encode(data)
        return b"".join(text[i : i + COLUMNS] + b"\n" for i in range(0, len(text), COLUMNS))

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._done:
            raise ValueError("update() after finalize()")
        head = b"" if self._started else BEGIN + b"\n"
        self._started = True
        self._pending += data
        whole = len(self._pending) // _LINE_BYTES * _LINE_BYTES
        if not whole:
            return head
        body = self._lines(bytes(self._pending[:whole]))
        del self._pending[:whole]
        return head + body

    def finalize(self) -> bytes:
        if self._done:
            raise ValueError("finalize() called twice")
        self._done = True
        head = b"" if self._started else BEGIN + b"\n"
        return head + self._lines(bytes(self._pending)) + END + b"\n"


class ArmorDecoder:
    """Decode armored input strictly; ``update`` returns decoded bytes of validated lines."""

    def __init__(self) -> None:
        self._state = _BEFORE
        self._partial = bytearray()
        self._whitespace = 0
        self._error: str | None = None

    def _fail(self, message: str) -> ArmorError:
        self._error = message
        return ArmorError(message)

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._error is not None:
            raise ArmorError(self._error)
        self._partial += data
        cut = self._partial.rfind(b"\n")
        if cut < 0:
            if len(self._partial) > _MAX_PARTIAL_LINE:
                raise self._fail("armored input has an over-long line")
            return b""
        lines = bytes(self._partial[:cut]).split(b"\n")
        del self._partial[: cut + 1]
        return self._lines(lines)

    def finalize(self) -> None:
        """Check the armor ended properly (END line, only whitespace after it)."""
        if self._error is not None:
            raise ArmorError(self._error)
        if self._partial:
            self._lines([bytes(self._partial)])
            self._partial.clear()
        if self._state == _BEFORE:
            raise self._fail("no '-----BEGIN AGE ENCRYPTED FILE-----' line found")
        if self._state != _AFTER:
            raise self._fail("armored input ends without the '-----END AGE ENCRYPTED FILE-----'"
                             " line (truncated?)")

    def _lines(self, lines: list[bytes]) -> bytes:
        out: list[bytes] = []
        batch: list[bytes] = []  # consecutive full lines, decoded together for speed
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if self._state == _BODY and len(line) == COLUMNS and line[-1] != 0x3D:  # "="
                batch.append(line)
                continue
            if batch:
                out.append(self._decode_full(batch))
                batch = []
            data = self._line(raw, line)
            if data:
                out.append(data)
        if batch:
            out.append(self._decode_full(batch))
        return b"".join(out)

    def _decode_full(self, batch: list[bytes]) -> bytes:
        try:
            return binascii.a2b_base64(b"".join(batch), strict_mode=True)
        except binascii.Error:
            raise self._fail("armored line is not valid base64") from None

    def _line(self, raw: bytes, line: bytes) -> bytes:
        """Handle one line outside the fast path; returns decoded data (maybe empty)."""
        if self._state in (_BEFORE, _AFTER) and not line.strip(_WHITESPACE):
            self._whitespace += len(raw) + 1
            if self._whitespace > _MAX_WHITESPACE:
                raise self._fail("too much whitespace around the armored file")
            return b""
        if self._state == _BEFORE:
            if line != BEGIN:
                raise self._fail("not an age file: expected 'age-encryption.org/v1' or a"
                                 " '-----BEGIN AGE ENCRYPTED FILE-----' line")
            self._state, self._whitespace = _BODY, 0
            return b""
        if self._state == _AFTER:
            raise self._fail("unexpected data after the END line of the armored file")
        if line == END:
            self._state = _AFTER
            return b""
        if self._state == _EXPECT_END:
            raise self._fail("armored line after a short line (only the last line may be short)")
        if not line:
            raise self._fail("empty line inside the armored file")
        if len(line) > COLUMNS:
            raise self._fail("armored line is longer than 64 columns")
        try:
            data = binascii.a2b_base64(line, strict_mode=True)
        except binascii.Error:
            raise self._fail("armored line is not valid base64") from None
        if base64.b64encode(data) != line:
            raise self._fail("armored line is not canonical base64")
        if len(data) < _LINE_BYTES:
            self._state = _EXPECT_END
        return data
