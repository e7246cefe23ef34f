"""Hypothesis: generated domain properties files. Either they load, or every error names the file and a key.

Files are written the way WebOTX's are (Java properties, ISO-8859-1 with ``\\u`` escapes) from the
keys kagemusha reads plus random ones with random values; broken ones are raw bytes. No other
exception than ``ConfigError`` may come out. ``examples(40, 1000)`` files of each kind.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import javaproperties
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kagemusha.domains import _properties as props
from kagemusha.domains._properties import load_properties
from kagemusha.errors import ConfigError
from tests.fuzz.conftest import examples

KNOWN = [getattr(props, k) for k in dir(props) if k.startswith("KEY_")] + [
    "server.http.port", "domain.ssl.support", "jms.transport", "domain.admin.ssl.port", "some.port.list"]
VALUES = st.one_of(
    st.text(max_size=12), st.integers(-5, 70000).map(str), st.sampled_from(
        ["", " ", "domain1", "admin", "6202", "8080", "true", "0", "65536", "1_000", "٣٣", "a:b", "x\x00y", "root",
         "nobody", "mod:attr", "/etc", "h@st", "1e3"]))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kg-fuzz-props-") as d:
        yield Path(d)


def check(path: Path) -> None:
    try:
        p = load_properties(path)
    except ConfigError as exc:
        assert exc.errors
        for loc, msg in exc.errors:
            assert loc.startswith(str(path)), (loc, msg)
            assert msg and "\n" not in msg, (loc, msg)
            key = loc[len(str(path)):].removeprefix(": ")
            assert key == "" or key in KNOWN or key in _keys(path), (loc, msg)
        return
    assert 1 <= p.admin_port <= 65535 and 1 <= p.http_port <= 65535 and p.admin_port != p.http_port


def _keys(path: Path) -> set[str]:
    try:
        return set(javaproperties.loads(path.read_text(encoding="latin-1")))
    except Exception:  # noqa: BLE001 - a file the parser refuses names no key
        return set()


@settings(max_examples=examples(40, 1000))
@given(data=st.dictionaries(st.sampled_from(KNOWN) | st.text(min_size=1, max_size=10), VALUES, max_size=10),
       base=st.booleans())
def test_generated_properties(workdir: Path, data: dict[str, str], base: bool) -> None:
    if base:
        data = {props.KEY_NAME: "domain1", props.KEY_ADMIN_PORT: "6202", props.KEY_HTTP_PORT: "8080", **data}
    p = workdir / "d.properties"
    p.write_text(javaproperties.dumps(data, timestamp=False), encoding="latin-1")
    check(p)


@settings(max_examples=examples(40, 1000))
@given(raw=st.binary(max_size=300))
def test_raw_bytes(workdir: Path, raw: bytes) -> None:
    p = workdir / "d.properties"
    p.write_bytes(raw)
    check(p)


def test_nul_in_run_user_is_a_clear_error(workdir: Path) -> None:
    """``domain.run.user`` with a NUL byte made ``pwd.getpwnam`` raise ValueError (a traceback)."""
    p = workdir / "d.properties"
    p.write_text(javaproperties.dumps({props.KEY_NAME: "domain1", props.KEY_ADMIN_PORT: "6202",
                                       props.KEY_HTTP_PORT: "8080", props.KEY_RUN_USER: "a\x00b"}), encoding="latin-1")
    with pytest.raises(ConfigError) as info:
        load_properties(p)
    assert [loc for loc, _ in info.value.errors] == [f"{p}: {props.KEY_RUN_USER}"]
