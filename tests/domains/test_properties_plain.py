"""The plain properties reader (no javaproperties import on a domain start) reads exactly as javaproperties.

``parse_plain`` takes a file without ``\\u`` escapes and continued lines; javaproperties is the reference for it.
"""

from __future__ import annotations

import javaproperties
from hypothesis import given, settings
from hypothesis import strategies as st

from kagemusha.domains._properties import parse_plain

#: The characters that matter to the format, and some that do not.
PIECES = st.sampled_from([" ", "\t", "\f", "=", ":", "#", "!", "\r", "\n", "\r\n", "\x0b", "\x0c", "\x85",
                          "\u2028", "a", "key", "domain.http.port", "8080", "x y", "é", "\\", "\\\\", "\\:", "\\=",
                          "\\ ", "\\t", "\\n", "\\u0041", "u", "\\\n"])
TEXTS = st.lists(PIECES | st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=6),
                 max_size=30).map("".join)


@settings(max_examples=500, deadline=None)
@given(text=TEXTS)
def test_plain_reads_as_javaproperties(text: str) -> None:
    plain = parse_plain(text)
    if plain is not None:
        assert list(plain.items()) == list(javaproperties.loads(text).items())
    else:
        assert "\\" in text


def test_a_seed_properties_file() -> None:
    text = ("# domain1\n! bang comment\n  domain.name = domain1\ndomain.admin.port:6202\n"
            "domain.http.port 8080\r\nempty=\nbare\n  trailing = kept  \n\n")
    assert parse_plain(text) == {"domain.name": "domain1", "domain.admin.port": "6202", "domain.http.port": "8080",
                                 "empty": "", "bare": "", "trailing": "kept  "}
    assert parse_plain(text) == javaproperties.loads(text)


def test_escapes() -> None:
    """What ``domain deploy`` writes (javaproperties escapes ':' in a value) is read here."""
    assert parse_plain("domain.app=hello_asgi\\:app\nk\\ ey=C:\\\\data\\t\n") == {"domain.app": "hello_asgi:app",
                                                                              "k ey": "C:\\data\t"}
    assert parse_plain("key=\\u0041\n") is None  # left to javaproperties
    assert parse_plain("key=a\\\n  b\n") is None  # a continued line: left to javaproperties
