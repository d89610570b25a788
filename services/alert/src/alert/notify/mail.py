"""Email receivers over SMTP (aiosmtplib): the operator's server, not a user-given URL."""

from __future__ import annotations

import logging
from email.message import EmailMessage

import aiosmtplib

from alert.config import AlertSettings
from alert.notify.delivery import Attempt, Delivery
from tributary import egress

log = logging.getLogger(__name__)

#: failure classes an attempt records, as webhooks do (tributary.egress.failures); the
#: server's words go to the log, which only the operator reads
RECIPIENTS_REFUSED = "recipients-refused"
SMTP_STATUS = "smtp-status"


def build_message(d: Delivery, sender: str, external_url: str) -> EmailMessage:
    status = "RESOLVED" if d.kind == "resolved" else "FIRING"
    name = d.labels.get("alertname", "alert")
    severity = d.labels.get("severity", "")
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(d.config.get("to") or [])
    prefix = str(d.config.get("subject_prefix") or "")
    message["Subject"] = f"{prefix}[{status}] {name} on {d.subject} ({severity})".strip()
    lines = [
        f"{status}: {name}",
        f"subject: {d.subject}",
        f"since: {d.starts_at.isoformat()}",
    ]
    if d.ends_at is not None and d.kind == "resolved":
        lines.append(f"resolved: {d.ends_at.isoformat()}")
    if d.value is not None:
        lines.append(f"value: {d.value:g}")
    lines.append("")
    lines.extend(f"{k}: {v}" for k, v in sorted(d.annotations.items()))
    lines.append("")
    lines.extend(f"  {k}={v}" for k, v in sorted(d.labels.items()))
    lines.append("")
    lines.append(f"{external_url.rstrip('/')}/events/{d.event_id}")
    message.set_content("\n".join(lines))
    message["X-Alert-Fingerprint"] = d.fingerprint
    message["X-Alert-Event-Id"] = d.event_id
    return message


async def send(d: Delivery, settings: AlertSettings) -> Attempt:
    message = build_message(d, settings.smtp_from, settings.external_url)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            start_tls=settings.smtp_starttls,
            use_tls=settings.smtp_tls,
            timeout=settings.smtp_timeout_seconds,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        log.warning("delivery %s: recipients refused: %s", d.notification_id, refused)
        return Attempt(ok=False, retryable=False, error=RECIPIENTS_REFUSED)
    except aiosmtplib.SMTPResponseException as exc:
        log.warning("delivery %s: SMTP %s %s", d.notification_id, exc.code, exc.message)
        # 5xx: the server refuses for good (bad address...); 4xx: try again later
        return Attempt(ok=False, retryable=exc.code < 500, status_code=exc.code, error=SMTP_STATUS)
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.warning("delivery %s: %s: %s", d.notification_id, type(exc).__name__, exc)
        return Attempt(ok=False, retryable=True, error=egress.classify(exc))
    return Attempt(ok=True, status_code=250)
