"""`keyward agent`: keep certificates on disk, issued and renewed through the API, keys generated here."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from cryptography.hazmat.primitives import serialization

from agent.client import AgentError, Issued, KeywardClient, ServerError, Target
from agent.config import AgentConfig, AgentConfigError, CertificateSpec, describe_duration, load_config
from agent.files import fix_modes, inspect, write_atomically
from pki.csr import build_csr
from pki.key import KeyAlgorithm, generate_private_key, serialize_private_key

log = logging.getLogger("keyward.agent")

# Tests (and only tests) move the agent's clock: an ISO 8601 time the agent takes as "now".
CLOCK_VARIABLE = "KEYWARD_AGENT_NOW"


def now() -> datetime:
    text = os.environ.get(CLOCK_VARIABLE, "").strip()
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_clock() -> None:
    try:
        now()
    except ValueError:
        raise AgentConfigError(
            f"{CLOCK_VARIABLE} must be an ISO 8601 time such as 2030-01-01T00:00:00Z"
        ) from None


@dataclass
class Outcome:
    ok: bool
    next_check: datetime | None = None  # when this certificate enters its renew window


class Agent:
    def __init__(self, config: AgentConfig, client: KeywardClient) -> None:
        self.config = config
        self.client = client
        self._target: Target | None = None
        self._warned: set[str] = set()

    def target(self) -> Target:
        if self._target is None:
            self._target = self.client.resolve()
            log.info(
                "application %r and profile %r resolved (profile renews %d days before expiry)",
                self.config.application_name,
                self.config.profile_name,
                self._target.renew_before_days,
            )
        return self._target

    def run_pass(self) -> tuple[bool, datetime | None]:
        """One look at every certificate; True when all are in place. Also the earliest next renew time."""
        ok, earliest = True, None
        for spec in self.config.certificates:
            try:
                outcome = self._keep(spec)
            except (AgentError, AgentConfigError) as exc:
                if isinstance(exc, ServerError) and exc.code in {"NOT_FOUND", "FORBIDDEN"}:
                    self._target = None  # the application or profile may have changed: resolve again
                log.error("certificate %s: %s", spec.name, exc)
                ok = False
                continue
            if outcome.next_check is not None and (earliest is None or outcome.next_check < earliest):
                earliest = outcome.next_check
        return ok, earliest

    def _window(self, spec: CertificateSpec, lifetime: timedelta, target: Target) -> timedelta:
        rule = self.config.renew_before
        window = rule.of(lifetime) if rule is not None else timedelta(days=target.renew_before_days)
        if window > lifetime * 2 / 3:
            # A window close to the lifetime would renew on (almost) every pass: renew at two thirds.
            if spec.name not in self._warned:
                self._warned.add(spec.name)
                log.warning(
                    "certificate %s: renew-before %s leaves less than a third of the %s lifetime; "
                    "renewing a third of the lifetime before expiry instead",
                    spec.name,
                    describe_duration(window),
                    describe_duration(lifetime),
                )
            return lifetime / 3
        return window

    def _keep(self, spec: CertificateSpec) -> Outcome:
        target = self.target()
        key_type = spec.key_type or KeyAlgorithm(target.default_key_algorithm)
        disk = inspect(spec, key_type)
        moment = now()
        if disk.problem is None and disk.certificate is not None:
            cert = disk.certificate
            lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
            renew_at = cert.not_valid_after_utc - self._window(spec, lifetime, target)
            for change in fix_modes(spec):
                log.info("certificate %s: fixed file mode %s", spec.name, change)
            if moment < renew_at:
                log.info(
                    "certificate %s: serial %X is good until %s; renewal from %s",
                    spec.name,
                    cert.serial_number,
                    cert.not_valid_after_utc.isoformat(),
                    renew_at.isoformat(),
                )
                return Outcome(True, renew_at)
            reason = (
                f"expired at {cert.not_valid_after_utc.isoformat()}"
                if moment >= cert.not_valid_after_utc
                else f"expires at {cert.not_valid_after_utc.isoformat()}, inside the renew-before window"
            )
            issued, action = self._renew_or_issue(spec, target, key_type, cert.serial_number)
        else:
            reason = disk.problem or "no certificate"
            issued, action = self._obtain(spec, target, key_type, None)
        log.info(
            "certificate %s: %s serial %s valid until %s (%s)",
            spec.name,
            action,
            issued.serial_number,
            issued.not_after,
            reason,
        )
        self._post_command(spec, action, issued)
        return Outcome(True, None)

    def _renew_or_issue(
        self, spec: CertificateSpec, target: Target, key_type: KeyAlgorithm, serial: int
    ) -> tuple[Issued, str]:
        found = self.client.find_by_serial(target, spec.sans[0].value, serial)
        if found is None or found[1] not in {"ACTIVE", "EXPIRED"}:
            why = "not in the inventory" if found is None else f"{found[1].lower()} in the inventory"
            log.info("certificate %s: serial %X is %s; issuing a new one", spec.name, serial, why)
            return self._obtain(spec, target, key_type, None)
        return self._obtain(spec, target, key_type, found[0])

    def _obtain(
        self, spec: CertificateSpec, target: Target, key_type: KeyAlgorithm, renew_id: str | None
    ) -> tuple[Issued, str]:
        """A fresh key made here; only its CSR leaves the host. Files are written only after success."""
        key = generate_private_key(key_type)
        subject = [("CN", spec.common_name)] if spec.common_name else []
        csr = build_csr(key=key, subject=subject, sans=list(spec.sans))
        csr_pem = csr.public_bytes(serialization.Encoding.PEM).decode("ascii")
        if renew_id is not None:
            try:
                issued, action = self.client.renew(renew_id, csr_pem), "renewed"
            except ServerError as exc:
                if exc.code != "INVALID_STATE":
                    raise
                log.info("certificate %s: renewal refused (%s); issuing a new one", spec.name, exc)
                issued, action = self.client.issue(target, csr_pem, spec.extended_key_usages), "issued"
        else:
            issued, action = self.client.issue(target, csr_pem, spec.extended_key_usages), "issued"
        self._write(spec, serialize_private_key(key), issued)
        return issued, action

    def _write(self, spec: CertificateSpec, key_pem: bytes, issued: Issued) -> None:
        # Key first, certificate last: a crash in between leaves a mismatch the next pass repairs.
        write_atomically(spec.key_path, key_pem, spec.key_mode)
        if spec.chain_path is not None:
            write_atomically(spec.chain_path, issued.chain_pem.encode(), spec.chain_mode)
        if spec.fullchain_path is not None:
            full = issued.certificate_pem + issued.chain_pem
            write_atomically(spec.fullchain_path, full.encode(), spec.certificate_mode)
        write_atomically(spec.certificate_path, issued.certificate_pem.encode(), spec.certificate_mode)

    def _post_command(self, spec: CertificateSpec, action: str, issued: Issued) -> None:
        if spec.post_command is None:
            return
        env = {
            **os.environ,
            "KW_ACTION": action,
            "KW_CERTIFICATE_NAME": spec.name,
            "KW_CERTIFICATE_ID": issued.id,
            "KW_SERIAL": issued.serial_number,
            "KW_CERTIFICATE_PATH": str(spec.certificate_path),
            "KW_KEY_PATH": str(spec.key_path),
            "KW_CHAIN_PATH": str(spec.chain_path or ""),
            "KW_FULLCHAIN_PATH": str(spec.fullchain_path or ""),
        }
        env.pop(self.config.token_env, None)  # the hook does not need the agent's token
        timeout = spec.post_command_timeout.total_seconds()
        try:
            process = subprocess.Popen(
                spec.post_command, env=env, stdin=subprocess.DEVNULL, start_new_session=True
            )
        except OSError as exc:
            log.error("certificate %s: post-command could not start: %s", spec.name, exc.strerror)
            return
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            log.error(
                "certificate %s: post-command killed after %s",
                spec.name,
                describe_duration(spec.post_command_timeout),
            )
            return
        if code == 0:
            log.info("certificate %s: post-command ran (exit 0)", spec.name)
        else:
            log.error("certificate %s: post-command failed with exit status %d", spec.name, code)


def backoff_delay(failures: int, config: AgentConfig, rng: random.Random | None = None) -> float:
    """Exponential, capped at retry-max, with up to 10% added jitter so many agents do not retry in step."""
    base = config.retry_initial.total_seconds() * (2 ** min(failures - 1, 30))
    capped = min(base, config.retry_max.total_seconds())
    return min(capped * (1 + (rng or random).random() * 0.1), config.retry_max.total_seconds())


def run(config_path: Path, *, once: bool) -> int:
    """0: all in place (or stopped by a signal); 1: `--once` and a pass failed; 2: a bad config."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s keyward-agent: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines add nothing; ours say what happened
    try:
        _check_clock()
        config = load_config(config_path)
        config.read_token()
    except AgentConfigError as exc:
        log.error("%s: %s", config_path, exc)
        return 2
    if config.token_file is not None and config.token_file.stat().st_mode & 0o077:
        log.warning("token-file %s is readable by others: chmod 600 it", config.token_file)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    client = KeywardClient(config)
    agent = Agent(config, client)
    log.info(
        "started: %d certificate(s) for application %r, profile %r at %s",
        len(config.certificates),
        config.application_name,
        config.profile_name,
        config.server,
    )
    failures = 0
    try:
        while not stop.is_set():
            try:
                ok, earliest = agent.run_pass()
            except Exception as exc:  # a bug must not kill a long-running agent; the pass is retried
                log.exception("pass failed unexpectedly: %s", exc)
                ok, earliest = False, None
            if once:
                return 0 if ok else 1
            if ok:
                failures = 0
                delay = config.poll_interval.total_seconds()
                if earliest is not None:
                    delay = max(1.0, min(delay, (earliest - now()).total_seconds()))
                log.info("next check in %s", describe_duration(timedelta(seconds=int(delay))))
            else:
                failures += 1
                delay = backoff_delay(failures, config)
                log.warning("pass failed (%d in a row); retrying in %.1fs", failures, delay)
            stop.wait(delay)
        return 0
    finally:
        client.close()
