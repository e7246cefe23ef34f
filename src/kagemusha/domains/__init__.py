"""Application-server domains: the WebOTX role.

A domain is an application server created from a properties file (the seed's
``domain1.properties``): its own ports, admin credentials (kept as an argon2 hash) and
directory, usually on the switchover disk. A started domain is a uvicorn server serving an
ASGI or WSGI app, with an admin API and a naming service; ``stop`` is graceful first, then,
with ``force``, every process of the domain is killed after ``wait_timeout`` seconds.

Usage::

    from kagemusha.domains import create_domain, start_domain, stop_domain, check_domain_health

    create_domain("domain1", "domain1.properties", domaindir="/data1/domains")
    start_domain("domain1")                                  # returns once the app answers
    health = check_domain_health("domain1", user="admin", password=secret)
    stop_domain("domain1", force=True, wait_timeout=300)

Every function takes ``registry=`` (a :class:`NodeRegistry`); by default the node's registry
comes from ``$KAGEMUSHA_DOMAIN_REGISTRY`` (else ``$KAGEMUSHA_HOME/domains``, else
``/var/lib/kagemusha/domains``). Failures raise :class:`~kagemusha.errors.DomainError` (one
clear line) or :class:`~kagemusha.errors.ConfigError` (properties: each error names file and key).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kagemusha._lazy import lazy_names

if TYPE_CHECKING:
    from kagemusha.domains._client import resolve_name
    from kagemusha.domains._control import (
        DEFAULT_START_WAIT,
        DEFAULT_WAIT_TIMEOUT,
        DomainHealth,
        DomainInfo,
        DomainState,
        check_domain_health,
        create_domain,
        delete_domain,
        deploy_app,
        domain_state,
        kill_domain,
        kill_domains_under,
        list_domains,
        remove_domains_root,
        set_autostart,
        set_properties,
        setup_domains_root,
        start_domain,
        stop_domain,
    )
    from kagemusha.domains._layout import ADMIN_DOMAIN, DEFAULT_ADMIN_PORT, DomainLayout, NodeRegistry
    from kagemusha.domains._properties import DomainProperties, load_properties

# NB: the names are imported when first used (PEP 562), so ``python -m kagemusha.domains._runtime``
# and ``._appserver`` (which import this package first) do not pay for psutil, javaproperties and
# the control code on every domain start.
_WHERE = {
    "resolve_name": "_client",
    **dict.fromkeys(
        (
            "DEFAULT_START_WAIT",
            "DEFAULT_WAIT_TIMEOUT",
            "DomainHealth",
            "DomainInfo",
            "DomainState",
            "check_domain_health",
            "create_domain",
            "delete_domain",
            "deploy_app",
            "domain_state",
            "kill_domain",
            "kill_domains_under",
            "list_domains",
            "remove_domains_root",
            "set_autostart",
            "set_properties",
            "setup_domains_root",
            "start_domain",
            "stop_domain",
        ),
        "_control",
    ),
    **dict.fromkeys(("ADMIN_DOMAIN", "DEFAULT_ADMIN_PORT", "DomainLayout", "NodeRegistry"), "_layout"),
    **dict.fromkeys(("DomainProperties", "load_properties"), "_properties"),
}


__getattr__ = lazy_names(__name__, _WHERE, globals())


__all__ = [
    "ADMIN_DOMAIN",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_START_WAIT",
    "DEFAULT_WAIT_TIMEOUT",
    "DomainHealth",
    "DomainInfo",
    "DomainLayout",
    "DomainProperties",
    "DomainState",
    "NodeRegistry",
    "check_domain_health",
    "create_domain",
    "delete_domain",
    "deploy_app",
    "domain_state",
    "kill_domain",
    "kill_domains_under",
    "list_domains",
    "load_properties",
    "remove_domains_root",
    "resolve_name",
    "set_autostart",
    "set_properties",
    "setup_domains_root",
    "start_domain",
    "stop_domain",
]
