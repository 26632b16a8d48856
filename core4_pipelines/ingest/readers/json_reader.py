"""read_jsonl and read_json: records of JSON Lines and JSON files, streamed."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator

from core4_pipelines.errors import RecordError
from core4_pipelines.ingest.readers.inputs import (
    bounded_lines,
    check_field_names,
    decode_error_position,
    make_record,
    not_text_error,
    open_sources,
    source_label,
    text_of,
)

# The largest single JSON value read (characters): an array's element, or a file's one object.
MAX_VALUE_CHARS = 64 << 20
# A file up to this size (characters) is parsed at once by json.loads (3x faster than element by
# element); its records carry no line. A larger one is streamed.
WHOLE_CHARS = 16 << 20
# A streamed array is read in blocks of this many characters and parsed a block's complete
# elements at a time.
_BLOCK = 1 << 20
_BLANKS = re.compile(r"[ \t\n\r]*")


def _check_encoding(encoding: str) -> None:
    import codecs

    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"encoding {encoding!r} is not an encoding Python knows (e.g. utf-8, utf-16, latin-1)") from None


def read_jsonl(path: str, *, encoding: str = "utf-8") -> Iterator[dict]:
    """Records of a JSON Lines file (compressed or not): one JSON object per line; blank lines
    are skipped. Raises :class:`RecordError` naming the line for a line that is not JSON or not
    an object, bytes that are not ``encoding``, or keys MongoDB cannot store."""
    _check_encoding(encoding)
    for member, opener in open_sources(path):
        shown = source_label(path, member)
        line, used = 0, encoding
        binary = opener()
        try:
            handle, used = text_of(binary, encoding)
            for line, text in enumerate(bounded_lines(handle, shown), start=1):
                if not text.strip():
                    continue
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    raise RecordError(f"{shown}: line {line}: not JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise RecordError(f"{shown}: line {line}: expected a JSON object, got {type(record).__name__}")
                check_field_names(record, f"{shown}: line {line}")
                yield make_record(record, line, member)
        except UnicodeDecodeError as exc:
            raise not_text_error(shown, decode_error_position(opener, used), line, used, exc) from exc
        finally:
            binary.close()


class _Text:
    """A text stream read in blocks, with the line number of any position in it.

    While ``lazy_lines`` is set (a streamed array: its records carry no line) the lines of the
    text dropped from the buffer are not counted; ``reopen`` gives the text again from its start
    for the rare line asked after that (an error, an element read one by one).
    """

    def __init__(self, handle, shown: str, reopen=None):
        self.handle, self.shown, self.reopen = handle, shown, reopen
        self.buffer, self.position, self.eof = "", 0, False
        self.line, self.counted = 1, 0  # the line at buffer position ``counted``
        self.dropped = 0  # characters before the buffer's start
        self.lazy_lines, self.lines_known = False, True

    def more(self) -> bool:
        if self.eof:
            return False
        block = self.handle.read(_BLOCK)
        if not block:
            self.eof = True
            return False
        if self.position > _BLOCK:  # drop what is read, counting its lines
            if self.lazy_lines and self.reopen is not None:
                self.lines_known = False
            else:
                self.line_at(self.position)
            self.dropped += self.position
            self.buffer, self.position, self.counted = self.buffer[self.position:], 0, 0
        self.buffer += block
        return True

    def skip_blanks(self) -> str:
        """The next character that is not whitespace ("" at the end)."""
        while True:
            self.position = _BLANKS.match(self.buffer, self.position).end()
            if self.position < len(self.buffer):
                return self.buffer[self.position]
            if not self.more():
                return ""

    def line_at(self, position: int) -> int:
        """The line of ``position``; counted on from the last position asked (they only grow)."""
        if not self.lines_known:
            self._recount()
        if position >= self.counted:
            self.line += self.buffer.count("\n", self.counted, position)
            self.counted = position
            return self.line
        return self.line - self.buffer.count("\n", position, self.counted)

    def _recount(self) -> None:
        """The line at the buffer's start, counted in the text read again up to there."""
        lines, left = 1, self.dropped
        with self.reopen() as again:
            while left > 0:
                block = again.read(min(left, _BLOCK))
                if not block:
                    break
                lines += block.count("\n")
                left -= len(block)
        self.line, self.counted, self.lines_known = lines, 0, True

    def value(self, decoder: json.JSONDecoder):
        """The JSON value at the position, read on until it is complete."""
        while True:
            try:
                value, end = decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as exc:
                if len(self.buffer) - self.position > MAX_VALUE_CHARS:
                    raise RecordError(f"{self.shown}: line {self.line_at(self.position)}: a JSON value longer "
                                      f"than {MAX_VALUE_CHARS} characters") from None
                if self.more():
                    continue
                raise RecordError(f"{self.shown}: line {self.line_at(exc.pos)}: not JSON ({exc.msg})") from None
            if end == len(self.buffer) and self.more():
                continue  # a number may go on in the next block
            self.position = end
            return value


def read_json(path: str, *, encoding: str = "utf-8") -> Iterator[dict]:
    """Records of a JSON file (compressed or not): an array of objects, streamed element by
    element (any length, little memory; a file up to WHOLE_CHARS is parsed at once), or one
    object (one record). Raises
    :class:`RecordError` naming the line for text that is not JSON, an element that is not an
    object, or keys MongoDB cannot store."""
    _check_encoding(encoding)
    decoder = json.JSONDecoder()
    for member, opener in open_sources(path):
        shown = source_label(path, member)
        binary = opener()
        used = encoding
        text = None
        try:
            handle, used = text_of(binary, encoding)
            text = _Text(handle, shown, reopen=lambda opener=opener, used=used: text_of(opener(), used)[0])
            whole = _whole(text)
            if whole is not None:  # a file of up to WHOLE_CHARS: parsed at once, in C
                checked: tuple = ()
                for element in whole:
                    keys = tuple(element)
                    if keys != checked:  # the elements of one file mostly share their keys: checked once
                        check_field_names(keys, shown)
                        checked = keys
                    # No line to tell: the parsed dict itself (a zip member's record names its member).
                    yield element if member is None else make_record(element, None, member)
                continue
            first = text.skip_blanks()
            if first == "{":
                line = text.line_at(text.position)
                record = text.value(decoder)
                yield _object(record, shown, line, member)
                if text.skip_blanks():
                    raise RecordError(f"{shown}: line {text.line_at(text.position)}: more after the JSON object")
                continue
            if first != "[":
                raise RecordError(f"{shown}: line {text.line_at(text.position)}: expected a JSON array of objects "
                                  f"or one object, got {'nothing' if not first else repr(first)}")
            text.position += 1
            if text.skip_blanks() == "]":
                text.position += 1
            else:
                for records in _array(text, decoder, shown, member):
                    yield from records  # one generator frame per record, not two
            if text.skip_blanks():
                raise RecordError(f"{shown}: line {text.line_at(text.position)}: more after the JSON array")
        except UnicodeDecodeError as exc:
            line = text.line if text is not None else 0
            raise not_text_error(shown, decode_error_position(opener, used), line, used, exc) from exc
        finally:
            binary.close()


def _whole(text: _Text) -> list | None:
    """The file's elements (an array's, or its one object) when all of it fits in WHOLE_CHARS and
    parses as an array of objects or an object; else None, and ``text`` is read element by
    element from its start (which also finds the line of whatever is wrong)."""
    wanted = WHOLE_CHARS + 1 - len(text.buffer)
    rest = text.handle.read(wanted)  # one read: block by block would copy the text over and over
    text.buffer += rest
    if len(rest) == wanted:
        return None  # larger: streamed, from what is read
    text.eof = True
    try:
        value = json.loads(text.buffer)
    except ValueError:
        return None
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(element, dict) for element in value):
        return value
    return None


def _array(text: _Text, decoder: json.JSONDecoder, shown: str, member: str | None) -> Iterator[list]:
    """The elements of an array from the first one (at ``text.position``) to its ']', as lists
    of records.

    Fast: the buffer's text up to its last '}' that a ',' or ']' follows is parsed at once by
    json.loads as an array; that succeeds only when it ends on an element's end (a cut inside a
    string or a nested object leaves it open), and those records carry no line. Where it does
    not (or an element is not an object, or has a key MongoDB cannot store), that stretch is read element by element, each with
    its line, which also names the line of whatever is wrong.
    """
    slow_until = -1  # the fast parse failed on the text up to here
    text.lazy_lines = True
    while True:
        buffer, start = text.buffer, text.position
        if start > slow_until:
            cut = buffer.rfind("}", start)
            after = _BLANKS.match(buffer, cut + 1).end() if cut >= 0 else len(buffer)
            if after < len(buffer) and buffer[after] in ",]":
                try:
                    elements = json.loads("[" + buffer[start:cut + 1] + "]")
                except ValueError:
                    elements = None
                if elements is not None and _checked(elements, shown):
                    yield elements if member is None else [make_record(element, None, member) for element in elements]
                    text.position = after + 1
                    if buffer[after] == "]":
                        return
                    text.skip_blanks()
                    continue
                slow_until = cut
            elif len(buffer) - start < 2 * _BLOCK and text.more():
                continue  # no element's end in the buffer yet: read on (an element of 2 blocks is read alone)
        line = text.line_at(text.position)
        yield [_object(text.value(decoder), shown, line, member)]
        after = text.skip_blanks()
        text.position += 1
        if after == "]":
            return
        if after != ",":
            raise RecordError(f"{shown}: line {text.line_at(text.position - 1)}: expected ',' or ']' "
                              f"in the array, got {'the end of the file' if not after else repr(after)}")
        text.skip_blanks()


def _checked(elements: list, shown: str) -> bool:
    """Whether every element is an object whose keys MongoDB can store (else the stretch is read
    again element by element, to name the line)."""
    if elements and set(map(type, elements)) != {dict}:
        return False
    try:  # the distinct keys gathered in C, then checked: the elements of one file mostly share theirs
        check_field_names(set(itertools.chain.from_iterable(elements)), shown)
    except RecordError:
        return False
    return True


def _object(value, shown: str, line: int | None, member: str | None):
    at = f"{shown}: line {line}" if line is not None else shown
    if not isinstance(value, dict):
        raise RecordError(f"{at}: expected a JSON object, got {type(value).__name__}")
    check_field_names(value, at)
    return make_record(value, line, member)

