"""Files on disk: atomic writes with modes, and what the certificate on disk says about itself."""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agent.config import CertificateSpec
from pki.certificate import public_keys_match
from pki.key import KeyAlgorithm, PrivateKey, key_algorithm_of
from pki.san import SubjectAltName, from_extension


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Temp file in the same directory, mode set before any byte is written, fsync, rename over the old."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def file_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class OnDisk:
    """The certificate on disk when it is usable as configured; `problem` says why it is not."""

    certificate: x509.Certificate | None
    problem: str | None


def _names(cert: x509.Certificate) -> set[SubjectAltName]:
    return set(from_extension(cert))


def inspect(spec: CertificateSpec, expected_key_type: KeyAlgorithm) -> OnDisk:
    """Read the certificate and key on disk and check them against the config (not the clock)."""
    try:
        data = spec.certificate_path.read_bytes()
    except FileNotFoundError:
        return OnDisk(None, f"no certificate at {spec.certificate_path}")
    except OSError as exc:
        return OnDisk(None, f"cannot read {spec.certificate_path}: {exc.strerror}")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        return OnDisk(None, f"{spec.certificate_path} holds no PEM certificate")
    try:
        key_data = spec.key_path.read_bytes()
    except OSError:
        return OnDisk(cert, f"no readable key at {spec.key_path}")
    try:
        key: PrivateKey = serialization.load_pem_private_key(key_data, password=None)  # type: ignore[assignment]
    except (ValueError, TypeError):
        return OnDisk(cert, f"{spec.key_path} holds no unencrypted PEM private key")
    if not public_keys_match(key.public_key(), cert.public_key()):
        return OnDisk(cert, f"the key at {spec.key_path} does not belong to the certificate")
    try:
        on_disk_type = key_algorithm_of(cert.public_key())
    except Exception:
        return OnDisk(cert, "the certificate's key type is not supported")
    if on_disk_type != expected_key_type:
        return OnDisk(cert, f"key type {on_disk_type.value} on disk, {expected_key_type.value} configured")
    if _names(cert) != set(spec.sans):
        have = ", ".join(sorted(f"{san.type}:{san.value}" for san in _names(cert)))
        want = ", ".join(sorted(f"{san.type}:{san.value}" for san in spec.sans))
        return OnDisk(cert, f"names on disk ({have}) differ from the config ({want})")
    for extra in (spec.chain_path, spec.fullchain_path):
        if extra is not None and not extra.exists():
            return OnDisk(cert, f"no chain at {extra}")
    return OnDisk(cert, None)


def fix_modes(spec: CertificateSpec) -> list[str]:
    """chmod files whose mode drifted from the config; returns one description per change."""
    fixed = []
    wanted = [
        (spec.certificate_path, spec.certificate_mode),
        (spec.key_path, spec.key_mode),
        (spec.chain_path, spec.chain_mode),
        (spec.fullchain_path, spec.certificate_mode),
    ]
    for path, mode in wanted:
        if path is None:
            continue
        current = file_mode(path)
        if current is not None and current != mode:
            os.chmod(path, mode)
            fixed.append(f"{path} {current:04o} -> {mode:04o}")
    return fixed
