"""Domain properties: the seed's ``domainN.properties`` read with a real Java-properties parser.

Every key that names a port is checked (integer 1-65535) and no port may serve two keys.
Keys kagemusha does not serve yet are kept, and their ports stay reserved, so a domain created
from the seed's file collides with nothing the seed's WebOTX would have used.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kagemusha.errors import ConfigError

__all__ = [
    "KEY_ADMIN_BIND",
    "KEY_ADMIN_PASSWORD",
    "KEY_BIND",
    "KEY_HTTPS_CERT",
    "KEY_HTTPS_KEY",
    "KEY_HTTPS_PORT",
    "WILDCARDS",
    "DomainProperties",
    "check_port_conflicts",
    "load_properties",
    "parse_properties",
    "port_keys",
    "probe_host",
    "redact_password",
    "set_key",
    "url_host",
]

KEY_NAME = "domain.name"
KEY_HOSTNAME = "domain.hostname"
KEY_ADMIN_USER = "domain.admin.user"
KEY_ADMIN_PASSWORD = "domain.admin.password"
KEY_ADMIN_PORT = "domain.admin.port"
KEY_HTTP_PORT = "domain.http.port"
KEY_NAMING_PORT = "server.corba-service.namesv.NameServicePort"
KEY_APP = "domain.app"
KEY_APP_PATH = "domain.app.path"
KEY_WORKERS = "domain.workers"
KEY_ADVERTISED = "domain.advertised.host"
KEY_RUN_USER = "domain.run.user"
KEY_HTTPS_PORT = "domain.https.port"
KEY_HTTPS_CERT = "domain.https.cert"
KEY_HTTPS_KEY = "domain.https.key"
KEY_RESTART_LIMIT = "domain.restart.limit"
KEY_RESTART_WINDOW = "domain.restart.window"
KEY_RESTART_BACKOFF = "domain.restart.backoff"
KEY_BIND = "domain.bind.address"
KEY_ADMIN_BIND = "domain.admin.bind.address"

WILDCARDS = frozenset({"0.0.0.0", "::"})
DEFAULT_BIND = "0.0.0.0"
DEFAULT_ADMIN_BIND = "127.0.0.1"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_APP_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SWITCHABLE_PORTS = frozenset({"domain.http.port", "domain.https.port"})  # 0 turns the service off
_BOOLEAN_VALUES = frozenset({"true", "false", "yes", "no", "on", "off"})
# Words that contain "port" without naming one (domain.ssl.support, jms.transport, ...).
_NOT_PORT_WORDS = ("support", "transport", "export", "import", "report", "passport", "portal", "portable")


@dataclass(frozen=True)
class DomainProperties:
    """One domain's properties, validated.

    ``raw`` keeps every key of the file (unknown ones too) except that the admin password is
    never kept here once :func:`redact_password` has run; ``ports`` maps each port key to its port.
    """

    name: str
    source: str
    raw: Mapping[str, str]
    ports: Mapping[str, int]
    admin_user: str
    admin_port: int
    http_port: int
    naming_port: int | None = None
    app: str | None = None
    app_path: str | None = None
    workers: int = 1
    advertised_host: str | None = None
    run_user: str | None = None
    hostname: str | None = None
    bind_address: str = DEFAULT_BIND
    admin_bind_address: str = DEFAULT_ADMIN_BIND
    https_port: int = 0
    https_cert: str | None = None
    https_key: str | None = None
    restart_limit: int = 3
    restart_window: float = 600.0
    restart_backoff: float = 1.0
    errors: tuple[tuple[str, str], ...] = field(default=())

    @property
    def admin_password(self) -> str | None:
        """The plain password if the operator's file holds one (never stored by kagemusha)."""
        return self.raw.get(KEY_ADMIN_PASSWORD)

    @property
    def advertised(self) -> str | None:
        """The host every service advertises: ``domain.advertised.host``, else a non-wildcard bind address."""
        if self.advertised_host:
            return self.advertised_host
        return None if self.bind_address in WILDCARDS else self.bind_address

    @property
    def probe_host(self) -> str:
        """Where this node reaches the domain's services (app, HTTPS, naming)."""
        return probe_host(self.bind_address)

    @property
    def admin_probe_host(self) -> str:
        """Where this node reaches the domain's admin API."""
        return probe_host(self.admin_bind_address)


def probe_host(bind: str) -> str:
    """The address to connect to for a socket bound to ``bind`` (loopback for a wildcard)."""
    if bind == "0.0.0.0":
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def url_host(host: str) -> str:
    """``host`` as it goes into a URL (IPv6 addresses in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _address(raw: Mapping[str, str], key: str, default: str, errors: list[tuple[str, str]], loc: str) -> str:
    value = raw.get(key, "").strip()
    if not value:
        return default
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        errors.append((f"{loc}: {key}", f"must be an IP address of this node (e.g. the VIP), got {value!r}"))
        return default


def is_port_key(key: str, value: str) -> bool:
    """Whether ``key=value`` names a port (``*port*`` keys, except words like ``support`` or booleans)."""
    low = key.lower()
    if "port" not in low or low.startswith("datasource."):  # a data source named e.g. "export" is no port
        return False
    stripped = low
    for word in _NOT_PORT_WORDS:
        stripped = stripped.replace(word, "")
    if "port" not in stripped:
        return False
    return value.strip().lower() not in _BOOLEAN_VALUES


def port_keys(raw: Mapping[str, str]) -> list[str]:
    """The keys of ``raw`` that name ports, in file order."""
    return [k for k, v in raw.items() if is_port_key(k, v)]


_EOL = re.compile(r"\r\n|\r|\n")  # Java's line ends only (str.splitlines splits on more)
# javaproperties' own rules (reading.py): a separator not escaped, a line continued by an odd backslash
_SEPARATOR = re.compile(r"(?<!\\)(?:\\\\)*([ \t\f]*[=:]|[ \t\f])[ \t\f]*")
_CONTINUED = re.compile(r"(?<!\\)(?:\\\\)*\\\Z")
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPES = {"t": "\t", "n": "\n", "f": "\f", "r": "\r"}


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field) if "\\" in field else field


def parse_plain(text: str) -> dict[str, str] | None:
    """``text`` parsed as Java properties, or None when it has a ``\\u`` escape or a continued line.

    Why: ``import javaproperties`` imports its XML support too (xml.sax, urllib, http.client,
    ssl, email), tens of milliseconds on every domain start (CLI and application server). A
    properties file without ``\\uXXXX`` escapes and continued lines is lines of ``key``,
    separator, ``value`` (Java's rules: leading blanks dropped, ``#``/``!`` comments, the key
    ends at the first unescaped blank, ``=`` or ``:``, the value keeps its trailing blanks,
    ``\\t \\n \\f \\r`` escapes and ``\\c`` for any other ``c``, a later key wins), which this reads
    exactly as ``javaproperties.loads`` does (``tests/domains/test_properties_plain.py`` compares
    the two on generated files). The rest is left to javaproperties.
    """
    if "\\u" in text:
        return None
    out: dict[str, str] = {}
    for line in _EOL.split(text):
        line = line.lstrip(" \t\f")
        if not line or line[0] in "#!":
            continue
        if _CONTINUED.search(line):
            return None
        m = _SEPARATOR.search(line)
        key, value = (line[: m.start(1)], line[m.end() :]) if m else (line, "")
        out[_unescape(key)] = _unescape(value)
    return out


def _read(path: Path) -> tuple[dict[str, str], str]:
    try:
        with open(
            path, encoding="latin-1"
        ) as fh:  # Java properties are ISO-8859-1 (\\u escapes for the rest)
            text = fh.read()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read properties file: {exc.strerror or exc}")]) from exc
    plain = parse_plain(text)
    if plain is not None:
        return plain, text
    import javaproperties

    try:
        return dict(javaproperties.loads(text)), text
    except Exception as exc:  # javaproperties raises ValueError subclasses on bad escapes
        raise ConfigError([(str(path), f"not a valid properties file: {exc}")]) from exc


def load_properties(path: str | Path, *, name: str | None = None) -> DomainProperties:
    """Read and validate a domain properties file.

    Args:
        path: the properties file (the seed's ``domain1.properties``).
        name: the domain name given on the command line; when set, ``domain.name`` must match it.

    Returns:
        The validated properties.

    Raises:
        ConfigError: the file cannot be read, or one or more keys are wrong; each error names
            the file and the key.
    """
    p = Path(path)
    raw, _ = _read(p)
    return parse_properties(raw, source=str(p), name=name)


def _int(raw: Mapping[str, str], key: str, errors: list[tuple[str, str]], loc: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        errors.append((f"{loc}: {key}", f"must be an integer, got {value!r}"))
        return None


def _float(
    raw: Mapping[str, str], key: str, errors: list[tuple[str, str]], loc: str, *, low: float
) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        errors.append((f"{loc}: {key}", f"must be a number of seconds, got {value!r}"))
        return None
    if not low <= number <= 86400 * 7:
        errors.append((f"{loc}: {key}", f"must be {low:g}-604800 seconds, got {value.strip()}"))
        return None
    return number


def parse_properties(
    raw: Mapping[str, str], *, source: str = "<properties>", name: str | None = None
) -> DomainProperties:
    """Validate already-parsed properties (see :func:`load_properties`)."""
    errors: list[tuple[str, str]] = []
    loc = source
    ports: dict[str, int] = {}
    for key in port_keys(raw):
        value = raw[key].strip()
        try:
            port = int(value)
        except ValueError:
            errors.append((f"{loc}: {key}", f"port must be an integer 1-65535, got {raw[key]!r}"))
            continue
        if port == 0 and key in _SWITCHABLE_PORTS:
            continue  # 0: this service is not served
        if not 1 <= port <= 65535:
            errors.append((f"{loc}: {key}", f"port must be an integer 1-65535, got {port}"))
            continue
        ports[key] = port
    seen: dict[int, str] = {}
    for key, port in ports.items():
        if port in seen:
            errors.append(
                (f"{loc}: {key}", f"port {port} is already used by {seen[port]} of the same domain")
            )
        else:
            seen[port] = key

    # -- data sources (issue 13 item 3; kagemusha.domains._datasource): keys only, no file is read here
    if any(k.startswith("datasource.") for k in raw):
        from kagemusha.domains._datasource import datasource_errors

        errors.extend(datasource_errors(raw, loc))

    dname = raw.get(KEY_NAME, "").strip()
    if not dname:
        errors.append((f"{loc}: {KEY_NAME}", "missing (the domain's name is required)"))
    elif not _NAME_RE.match(dname):
        errors.append(
            (f"{loc}: {KEY_NAME}", f"invalid domain name {dname!r} (letters, digits, '_', '-', '.')")
        )
    elif dname == "admin":
        errors.append((f"{loc}: {KEY_NAME}", "'admin' is the node's admin domain; choose another name"))
    elif name is not None and dname != name:
        errors.append((f"{loc}: {KEY_NAME}", f"is {dname!r} but the domain to create is {name!r}"))

    for required in (KEY_ADMIN_PORT, KEY_HTTP_PORT):
        if required not in raw:
            errors.append((f"{loc}: {required}", "missing (required to run the domain)"))
    workers = _int(raw, KEY_WORKERS, errors, loc)
    if workers is not None and not 1 <= workers <= 64:
        errors.append((f"{loc}: {KEY_WORKERS}", f"must be 1-64, got {workers}"))
    app = raw.get(KEY_APP, "").strip() or None
    if app is not None and not _APP_RE.match(app):
        errors.append((f"{loc}: {KEY_APP}", f"must be an import string 'module:attribute', got {app!r}"))
    run_user = raw.get(KEY_RUN_USER, "").strip() or None
    if run_user is not None:
        import pwd

        try:
            pwd.getpwnam(run_user)
        except (KeyError, ValueError):  # ValueError: a NUL byte in the name
            errors.append((f"{loc}: {KEY_RUN_USER}", f"no such user {run_user!r} on this node"))
    advertised = raw.get(KEY_ADVERTISED, "").strip() or None
    if advertised is not None and any(c in advertised for c in "/ @?#"):
        errors.append((f"{loc}: {KEY_ADVERTISED}", f"must be a host name or address, got {advertised!r}"))
    if (
        KEY_HTTP_PORT in raw
        and KEY_HTTP_PORT not in ports
        and KEY_HTTPS_PORT not in ports
        and not any(loc_ == f"{loc}: {KEY_HTTP_PORT}" for loc_, _ in errors)
    ):
        errors.append(
            (
                f"{loc}: {KEY_HTTP_PORT}",
                f"is 0 and {KEY_HTTPS_PORT} is not set: nothing would serve the app",
            )
        )
    cert = raw.get(KEY_HTTPS_CERT, "").strip() or None
    key_file = raw.get(KEY_HTTPS_KEY, "").strip() or None
    if (cert is None) != (key_file is None):
        missing = KEY_HTTPS_KEY if key_file is None else KEY_HTTPS_CERT
        errors.append((f"{loc}: {missing}", f"missing: {KEY_HTTPS_CERT} and {KEY_HTTPS_KEY} go together"))
    for k, v in ((KEY_HTTPS_CERT, cert), (KEY_HTTPS_KEY, key_file)):
        if v is not None and not v.startswith("/"):
            errors.append((f"{loc}: {k}", f"must be an absolute path to a PEM file, got {v!r}"))
    limit = _int(raw, KEY_RESTART_LIMIT, errors, loc)
    if limit is not None and not 0 <= limit <= 1000:
        errors.append((f"{loc}: {KEY_RESTART_LIMIT}", f"must be 0-1000, got {limit}"))
    window = _float(raw, KEY_RESTART_WINDOW, errors, loc, low=1.0)
    backoff = _float(raw, KEY_RESTART_BACKOFF, errors, loc, low=0.0)
    bind = _address(raw, KEY_BIND, DEFAULT_BIND, errors, loc)
    admin_bind = _address(raw, KEY_ADMIN_BIND, DEFAULT_ADMIN_BIND, errors, loc)
    if errors:
        raise ConfigError(errors)
    return DomainProperties(
        name=dname,
        source=source,
        raw=dict(raw),
        ports=ports,
        admin_user=raw.get(KEY_ADMIN_USER, "admin").strip() or "admin",
        admin_port=ports[KEY_ADMIN_PORT],
        http_port=ports.get(KEY_HTTP_PORT, 0),
        naming_port=ports.get(KEY_NAMING_PORT),
        app=app,
        app_path=raw.get(KEY_APP_PATH, "").strip() or None,
        workers=workers or 1,
        advertised_host=advertised,
        run_user=run_user,
        hostname=raw.get(KEY_HOSTNAME, "").strip() or None,
        bind_address=bind,
        admin_bind_address=admin_bind,
        https_port=ports.get(KEY_HTTPS_PORT, 0),
        https_cert=cert,
        https_key=key_file,
        restart_limit=3 if limit is None else limit,
        restart_window=600.0 if window is None else window,
        restart_backoff=1.0 if backoff is None else backoff,
    )


def check_port_conflicts(
    name: str, ports: Mapping[str, int], others: Iterable[tuple[str, Mapping[str, int]]]
) -> list[tuple[str, str]]:
    """Ports of domain ``name`` that another domain of the node already uses.

    Args:
        name: the domain being checked.
        ports: its port keys.
        others: ``(owner, ports)`` of every other domain (and the admin domain) on the node.

    Returns:
        ``(location, message)`` per conflict, naming both domains, both keys and the port.
    """
    taken: dict[int, tuple[str, str]] = {}
    for owner, oports in others:
        if owner == name:
            continue
        for key, port in oports.items():
            taken.setdefault(port, (owner, key))
    errors: list[tuple[str, str]] = []
    for key, port in ports.items():
        if port in taken:
            owner, okey = taken[port]
            errors.append((f"{name}: {key}", f"port {port} is already used by domain {owner} ({okey})"))
    return errors


def redact_password(text: str) -> str:
    """The properties text without its ``domain.admin.password`` entry (comments and order kept)."""
    import javaproperties

    out: list[str] = []
    for elem in javaproperties.parse(text):
        if isinstance(elem, javaproperties.KeyValue) and elem.key == KEY_ADMIN_PASSWORD:
            continue
        out.append(elem.source)
    return "".join(out)


def set_key(text: str, key: str, value: str | None) -> str:
    """The properties text with ``key`` set to ``value`` (or removed when None), everything else kept."""
    import javaproperties

    out: list[str] = []
    done = False
    for elem in javaproperties.parse(text):
        if isinstance(elem, javaproperties.KeyValue) and elem.key == key:
            if value is not None and not done:
                out.append(javaproperties.join_key_value(key, value) + "\n")
                done = True
            continue
        out.append(elem.source)
    if value is not None and not done:
        if out and not out[-1].endswith("\n"):
            out.append("\n")
        out.append(javaproperties.join_key_value(key, value) + "\n")
    return "".join(out)
