"""Field checkers shared by the readers of matrices/ and of other structured input.

A checker takes a raw value (from TOML or JSON) and returns it typed, or raises :class:`Bad` with
what is wrong; the reader adds the file, line and field. :class:`Collector` gathers every problem
so one run reports all of them.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any, Callable

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

__all__ = [
    "Bad", "Check", "Collector", "boolean", "integer", "number", "one_of", "printable", "regex", "spec", "str_map",
    "string_", "strings", "subset", "template", "url_template", "version",
]

Check = Callable[[Any], Any]
MAX_INT = 1 << 31


_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """*text* with every control character (C0, DEL, C1: escape sequences, carriage returns, new
    lines, bells) and every bidirectional override escaped as ``\\xNN`` / ``\\uNNNN``: a string
    from a facts file then prints as what it is, never moving the cursor, retitling the terminal or
    starting a forged line. Idempotent (a backslash is left as it is)."""
    def esc(m: re.Match[str]) -> str:
        c = ord(m.group(0))
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _UNPRINTABLE.sub(esc, text)


class Bad(Exception):
    """A value is wrong; the message says how."""


class Collector:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")


def string_(v: Any) -> str:
    if not isinstance(v, str):
        raise Bad(f"expected a string, got {type(v).__name__}")
    return v


def boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise Bad(f"expected true or false, got {type(v).__name__}")
    return v


def integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise Bad(f"expected an integer, got {type(v).__name__}")
    if abs(v) >= MAX_INT:
        raise Bad(f"{v} is out of range")
    return v


def number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Bad(f"expected a number, got {type(v).__name__}")
    f = float(v)
    if math.isnan(f) or math.isinf(f) or abs(f) >= MAX_INT:
        raise Bad(f"{v} is not a usable number")
    return f


def strings(v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise Bad("expected a list of strings")
    return tuple(v)


def integers(v: Any) -> tuple[int, ...]:
    if not isinstance(v, list):
        raise Bad("expected a list of integers")
    return tuple(integer(x) for x in v)


def str_map(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
        raise Bad("expected a table of strings")
    return dict(v)


def int_map(v: Any) -> dict[str, int]:
    if not isinstance(v, dict) or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x < MAX_INT
                                          for x in v.values()):
        raise Bad("expected a table of positive integers")
    return dict(v)


def regex(v: Any) -> str:
    try:
        re.compile(string_(v))
    except re.error as e:
        raise Bad(f"not a regular expression: {e}") from None
    return str(v)


def spec(v: Any) -> SpecifierSet:
    try:
        return SpecifierSet(string_(v))
    except InvalidSpecifier:
        raise Bad(f"'{v}' is not a version specifier (like '>=2.4,<2.9')") from None


def version(v: Any) -> Version:
    try:
        return Version(string_(v))
    except InvalidVersion:
        raise Bad(f"'{v}' is not a version") from None


def opt_version(v: Any) -> Version | None:
    return None if v == "" else version(v)


def subset(allowed: tuple[str, ...]) -> Check:
    def check(v: Any) -> tuple[str, ...]:
        out = strings(v)
        bad = [x for x in out if x not in allowed]
        if bad:
            raise Bad(f"{bad[0]!r} is not one of {', '.join(allowed)}")
        return out

    return check


def one_of(allowed: tuple[str, ...]) -> Check:
    def check(v: Any) -> str:
        s = string_(v)
        if s not in allowed:
            raise Bad(f"{s!r} is not one of {', '.join(allowed)}")
        return s

    return check


def template(placeholders: tuple[str, ...]) -> Check:
    """A str.format template that uses only the named *placeholders* (checked when loaded, so a
    typo or an unbalanced brace is a matrix error, not a crash at install time)."""

    def check(v: Any) -> str:
        text = string_(v)
        try:
            parts = [(name, spec, conv) for _lit, name, spec, conv in string.Formatter().parse(text)
                     if name is not None]
        except ValueError as e:
            raise Bad(f"not a valid template ({e})") from None
        unknown = [f for f, _s, _c in parts if f not in placeholders]
        if unknown:
            raise Bad(f"unknown placeholder {{{unknown[0]}}} (known: "
                      + ", ".join("{" + p + "}" for p in placeholders) + ")")
        odd = [f for f, s, cv in parts if s or cv]
        if odd:
            raise Bad(f"placeholder {{{odd[0]}}} has a conversion or format spec; write it as {{{odd[0]}}}")
        return text

    return check


def url_template(placeholders: tuple[str, ...]) -> Check:
    """A :func:`template` that is an http(s) URL with a host, checked with its placeholders filled."""
    inner = template(placeholders)

    def check(v: Any) -> str:
        from urllib.parse import urlsplit  # noqa: PLC0415

        text = str(inner(v))
        filled = text.format(**dict.fromkeys(placeholders, "x"))
        try:
            parts = urlsplit(filled)
        except ValueError as e:
            raise Bad(f"not a URL ({e})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc or any(ch.isspace() for ch in filled):
            raise Bad(f"'{text}' is not an http(s) URL template")
        return text

    return check
