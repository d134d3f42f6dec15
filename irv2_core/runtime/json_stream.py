"""Reading a big JSON document member by member, without its whole text or its whole tree.

A stage manifest of ImageNet's 1.28 M objects is ~280 MB of JSON; ``json.loads`` holds the text
and then every entry as a dict (issue 24: conversion's peak memory grew ~1 KB per image, most of
it from that). :class:`JsonReader` keeps a window of the file and lets ``json``'s own decoder
parse one value at a time from it, so only the value being read is in memory, and the syntax
is still the standard library's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["JsonReader"]

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"
_NUMBER_START = "-0123456789"
_NUMBER_CHARS = "+-.0123456789eE"


class JsonReader:
    """Values and object members read in order from a text file *fh*, *chunk* characters at a
    time. Malformed JSON raises ``ValueError`` (``json.JSONDecodeError`` is one)."""

    def __init__(self, fh: IO[str], chunk: int = 1 << 18) -> None:
        self._fh, self._chunk = fh, chunk
        self._buf, self._pos, self._eof = "", 0, False

    def _fill(self) -> bool:
        """Append the next chunk to the window (dropping what was read); False at the end."""
        if self._eof:
            return False
        more = self._fh.read(self._chunk)
        if not more:
            self._eof = True
            return False
        self._buf, self._pos = self._buf[self._pos :] + more, 0
        return True

    def peek(self) -> str:
        """The next character that is not whitespace ("" at the end of the file), not consumed."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return ""

    def _take(self, expected: str) -> str:
        found = self.peek()
        if not found or found not in expected:
            raise ValueError(f"JSON: expected one of {expected!r}, found {found or 'the end'!r}")
        self._pos += 1
        return found

    def value(self) -> Any:
        """The next whole value (string, number, list, object ...)."""
        first = self.peek()
        if first and first in _NUMBER_START:
            self._whole_number()
        while True:
            try:
                value, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError:
                if self._fill():
                    continue  # the value goes on past the window
                raise
            self._pos = end
            return value

    def _whole_number(self) -> None:
        """Refill until the number that starts here ends inside the window: "2." or "1e" at the
        window's edge would otherwise parse as a shorter number."""
        length = 0
        while True:
            end = self._pos + length
            while end < len(self._buf) and self._buf[end] in _NUMBER_CHARS:
                end += 1
            length = end - self._pos
            if end < len(self._buf) or not self._fill():
                return

    def members(self) -> Iterator[str]:
        """The keys of the object that starts here. After each key, the caller reads its value
        (``value()``, or ``members()`` for a nested object) before asking for the next key."""
        self._take("{")
        if self.peek() == "}":
            self._pos += 1
            return
        while True:
            key = self.value()
            if not isinstance(key, str):
                raise ValueError(f"JSON: an object key must be a string, found {key!r}")
            self._take(":")
            yield key
            if self._take(",}") == "}":
                return
