"""``domain`` monitor: the seed's WebOTX monitor resource, with the domain's admin user/password.

Usage in ``cluster.toml``::

    [[groups.monitors]]
    name = "otxw1"
    type = "domain"
    domain = "domain1"
    domaindir = "/data1/domains"             # default: where the node's registry says
    user = "admin"                           # default
    password_file = "/etc/kagemusha/domain1.pw"   # mode 0600, checked
    request_timeout = 3.0                    # per HTTP request; the monitor's timeout bounds the check

Each check asks the domain's admin API (``GET /status`` with HTTP basic auth,
on ``domain.admin.port``) whether the domain runs and accepts the credentials,
and the application's own port (``domain.http.port``) whether it answers
(:func:`kagemusha.domains.check_domain_health`). Both must serve.

The password never appears in logs, results or ``repr``; the ``password_file``
is read at each check, so rotating it needs no restart. An inline ``password``
key (the seed's WebOTX monitor takes one) is refused with an error that says
why: ``config apply`` keeps the file's text in the cluster store, and
``config show --toml``/``config diff`` print it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ConfigDict, Field, field_validator

from kagemusha.domains import NodeRegistry, check_domain_health
from kagemusha.errors import DomainError
from kagemusha.monitors._base import CheckResult, Monitor
from kagemusha.resources._base import INLINE_PASSWORD, DriverParams
from kagemusha.resources.domain import absolute_path

__all__ = ["DomainMonitor", "DomainMonitorParams"]


class DomainMonitorParams(DriverParams):
    """Parameters of a ``domain`` monitor."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, hide_input_in_errors=True)

    domain: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
    domaindir: str | None = None
    user: str = Field(default="admin", min_length=1)
    #: Refused when given (see ``INLINE_PASSWORD``); declared so the error names this key.
    password: Any = Field(default=None, exclude=True, repr=False)
    password_file: str = Field(min_length=1)
    request_timeout: float = Field(default=3.0, gt=0)
    registry: str | None = None

    _absolute = field_validator("domaindir", "registry")(classmethod(lambda cls, v: absolute_path(v)))

    @field_validator("password", mode="before")
    @classmethod
    def _no_inline_password(cls, v: Any) -> Any:
        if v is not None:
            raise ValueError(INLINE_PASSWORD)
        return v


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p


class DomainMonitor(Monitor):
    """Watches a domain: admin API with credentials, and the application's port."""

    type_name: ClassVar[str] = "domain"
    Params = DomainMonitorParams
    params: DomainMonitorParams

    @classmethod
    def check_params(cls, params: DriverParams, *, base_dir: Path | None = None) -> list[tuple[str, str]]:
        assert isinstance(params, DomainMonitorParams)
        p = _resolve(params.password_file, base_dir)
        try:
            text = p.read_text(encoding="utf-8").strip()
            mode = p.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            return [("password_file", f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}")]
        errors = []
        if not text:
            errors.append(("password_file", f"{p} is empty"))
        if mode & 0o077:
            errors.append(("password_file", f"{p} may be read by group or others; chmod 600 {p}"))
        return errors

    def _password(self) -> str:
        p = self.params
        # Relative paths resolve against cluster.toml's directory, as config validation did.
        pw = Path(p.password_file)
        if not pw.is_absolute() and self.ctx.base_dir is not None:
            pw = self.ctx.base_dir / pw
        return pw.read_text(encoding="utf-8").strip()

    async def check(self) -> CheckResult:
        p = self.params
        try:
            password = self._password()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            return CheckResult(False, f"cannot read password_file {p.password_file}: {why}")
        path = p.registry or self.ctx.env.get("KAGEMUSHA_DOMAIN_REGISTRY")
        registry = NodeRegistry(path) if path else NodeRegistry.from_env()
        try:
            health = await asyncio.to_thread(
                check_domain_health,
                p.domain,
                p.domaindir,
                user=p.user,
                password=password,
                timeout=p.request_timeout,
                registry=registry,
            )
        except DomainError as exc:
            return CheckResult(False, f"domain {p.domain}: {exc}")
        if health.ok:
            return CheckResult(True, f"domain {p.domain} {health.state.value}: admin API and application answer")
        detail = health.detail or f"admin_ok={health.admin_ok} app_ok={health.app_ok}"
        # NB: the detail comes from the library and never contains the password.
        return CheckResult(False, f"domain {p.domain} {health.state.value}: {detail}")
