"""Domain properties: the seed's ``domainN.properties`` read with a real Java-properties parser.

Every key that names a port is checked (integer 1-65535) and no port may serve two keys.
Keys kagemusha does not serve yet are kept, and their ports stay reserved, so a domain created
from the seed's file collides with nothing the seed's WebOTX would have used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import javaproperties

from kagemusha.errors import ConfigError

__all__ = [
    "KEY_ADMIN_PASSWORD",
    "DomainProperties",
    "check_port_conflicts",
    "load_properties",
    "parse_properties",
    "port_keys",
    "redact_password",
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

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_APP_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
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
    errors: tuple[tuple[str, str], ...] = field(default=())

    @property
    def admin_password(self) -> str | None:
        """The plain password if the operator's file holds one (never stored by kagemusha)."""
        return self.raw.get(KEY_ADMIN_PASSWORD)


def is_port_key(key: str, value: str) -> bool:
    """Whether ``key=value`` names a port (``*port*`` keys, except words like ``support`` or booleans)."""
    low = key.lower()
    if "port" not in low:
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


def _read(path: Path) -> tuple[dict[str, str], str]:
    try:
        with open(
            path, encoding="latin-1"
        ) as fh:  # Java properties are ISO-8859-1 (\\u escapes for the rest)
            text = fh.read()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read properties file: {exc.strerror or exc}")]) from exc
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
    if errors:
        raise ConfigError(errors)
    return DomainProperties(
        name=dname,
        source=source,
        raw=dict(raw),
        ports=ports,
        admin_user=raw.get(KEY_ADMIN_USER, "admin").strip() or "admin",
        admin_port=ports[KEY_ADMIN_PORT],
        http_port=ports[KEY_HTTP_PORT],
        naming_port=ports.get(KEY_NAMING_PORT),
        app=app,
        app_path=raw.get(KEY_APP_PATH, "").strip() or None,
        workers=workers or 1,
        advertised_host=advertised,
        run_user=run_user,
        hostname=raw.get(KEY_HOSTNAME, "").strip() or None,
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
    out: list[str] = []
    for elem in javaproperties.parse(text):
        if isinstance(elem, javaproperties.KeyValue) and elem.key == KEY_ADMIN_PASSWORD:
            continue
        out.append(elem.source)
    return "".join(out)


def set_key(text: str, key: str, value: str | None) -> str:
    """The properties text with ``key`` set to ``value`` (or removed when None), everything else kept."""
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
