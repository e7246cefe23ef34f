"""The domain's TLS certificate: the operator's PEM files, or a self-signed one made at create.

``domain.https.cert`` / ``domain.https.key`` name PEM files (absolute paths); the key must not be
readable by group or others (0600 or stricter) and must match the certificate. Without them,
``create`` (and ``set``, when the advertised host changes) makes a self-signed certificate for
the advertised host with ``cryptography``: ``config/https.crt`` and ``config/https.key`` (0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

__all__ = ["check_tls_files", "generate_self_signed"]


def check_tls_files(cert: str, key: str, *, cert_key: str, key_key: str) -> list[tuple[str, str]]:
    """Errors of a certificate/key pair, each as ``(property key, message)``; empty when usable."""
    import ssl

    errors: list[tuple[str, str]] = []
    for prop, path in ((cert_key, cert), (key_key, key)):
        if not os.path.isfile(path):
            errors.append((prop, f"no such file {path}"))
    if errors:
        return errors
    mode = os.stat(key).st_mode
    if mode & 0o077:
        errors.append((key_key, f"{key} is readable by others (mode {mode & 0o777:04o}); chmod 600 it"))
        return errors
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        errors.append((cert_key, f"{cert} and {key} are not a usable PEM certificate and key: {exc}"))
    return errors


def generate_self_signed(host: str, cert_path: Path, key_path: Path, *, days: int = 3650) -> None:
    """Write a self-signed certificate for ``host`` (DNS name or IP) and its key (0600)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp_key = key_path.with_name(f".{key_path.name}.tmp")
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key_pem)
    os.chmod(tmp_key, 0o600)
    tmp_cert = cert_path.with_name(f".{cert_path.name}.tmp")
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp_key, key_path)
    os.replace(tmp_cert, cert_path)
