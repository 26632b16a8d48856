"""An alert, and its delivery by e-mail (SMTP) or webhook (Slack, Teams, plain JSON).

The URLs (and their passwords) come from environment variables named in the rule and are
never written anywhere: a failed delivery names the server by its masked URL.
"""

from __future__ import annotations

import json
import os
import smtplib
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage

from core4_resources.config.alerts import AlertRule, EmailChannel, WebhookChannel
from core4_resources.config.masking import mask_url

# Seconds a server gets to answer: a sensor tick must not hang on a dead one.
TIMEOUT = 10.0
# Files listed in one message; the rest are counted.
MAX_LISTED_FILES = 50


class DeliveryError(Exception):
    """A message could not be delivered; the text names the channel, never a password."""


@dataclass(frozen=True)
class Alert:
    event: str            # one of core4_resources.config.alerts.EVENTS, or "test"
    project: str
    key: str              # what the event is: the same key is never sent twice
    subject: str
    lines: tuple[str, ...] = ()
    job: str | None = None
    batch: str | None = None
    run_id: str | None = None
    url: str | None = None  # the run (or asset) in the Dagster UI
    files: tuple[tuple[str, str], ...] = field(default=())  # (name, reason)
    file_count: int = 0   # all files of the event (files lists the first MAX_LISTED_FILES)

    def text(self) -> str:
        out = [self.subject, ""]
        out += [f"project: {self.project}"] + [f"{name}: {value}" for name, value in
                                               (("job", self.job), ("batch", self.batch), ("run", self.run_id))
                                               if value]
        out += list(self.lines)
        if self.files:
            out.append("")
            out += [f"- {name}: {reason}" for name, reason in self.files]
            if self.file_count > len(self.files):
                out.append(f"- ... and {self.file_count - len(self.files)} more")
        if self.url:
            out += ["", self.url]
        return "\n".join(out)

    def as_json(self) -> dict:
        data = asdict(self)
        data["files"] = [{"name": name, "reason": reason} for name, reason in self.files]
        data["text"] = self.text()
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> Alert:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["lines"] = tuple(fields.get("lines", ()))
        fields["files"] = tuple((f["name"], f["reason"]) for f in fields.get("files", ()))
        return cls(**fields)


def channel_label(rule: AlertRule, channel: str) -> str:
    """How a channel is named in logs and in ``coco alerts test``: no secret in it."""
    if channel == "email":
        return f"email to {', '.join(rule.email.to)} (smtp from ${rule.email.smtp})"
    return f"webhook {rule.webhook.format} (url from ${rule.webhook.url})"


def deliver(rule: AlertRule, channel: str, alert: Alert, environ: Mapping[str, str] | None = None) -> None:
    """Send ``alert`` to one channel of ``rule``; DeliveryError saying why it could not."""
    environ = os.environ if environ is None else environ
    if channel == "email":
        send_email(rule.email, alert, environ)
    else:
        send_webhook(rule.webhook, alert, environ)


def _url(variable: str, environ: Mapping[str, str], what: str) -> str:
    url = environ.get(variable)
    if not url:
        raise DeliveryError(f"{variable} is not set in this environment: it must hold the {what}")
    return url


def send_email(channel: EmailChannel, alert: Alert, environ: Mapping[str, str]) -> None:
    url = _url(channel.smtp, environ, "SMTP URL (smtp://[user:password@]host[:port], or smtps://)")
    shown = mask_url(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise DeliveryError(f"{channel.smtp} = {shown}: expected smtp://[user:password@]host[:port] or smtps://...")
    query = urllib.parse.parse_qs(parts.query)
    message = EmailMessage()
    message["Subject"] = alert.subject
    message["From"] = channel.sender or f"core4@{socket.getfqdn() or 'localhost'}"
    message["To"] = ", ".join(channel.to)
    message.set_content(alert.text())
    try:
        port = parts.port or (465 if parts.scheme == "smtps" else 25)
        kind = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
        with kind(parts.hostname, port, timeout=TIMEOUT) as server:
            if query.get("starttls", ["0"])[0].lower() in ("1", "true", "yes"):
                server.starttls()
            if parts.username:
                server.login(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
            server.send_message(message)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        raise DeliveryError(f"email to {', '.join(channel.to)} via {shown} failed: {type(exc).__name__}: "
                            f"{_masked(exc, url)}") from None


def webhook_body(format: str, alert: Alert) -> dict:
    if format == "slack":
        return {"text": alert.text()}
    if format == "teams":  # an Office 365 connector card: what Teams' incoming webhooks take
        return {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": alert.subject,
                "title": alert.subject, "text": alert.text().replace("\n", "\n\n")}
    return alert.as_json()


def send_webhook(channel: WebhookChannel, alert: Alert, environ: Mapping[str, str]) -> None:
    url = _url(channel.url, environ, "webhook's URL")
    shown = mask_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DeliveryError(f"{channel.url} = {shown}: expected an http:// or https:// URL")
    body = json.dumps(webhook_body(channel.format, alert)).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as answer:
            answer.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"webhook {shown} answered {exc.code} {exc.reason}") from None
    except (OSError, ValueError) as exc:
        raise DeliveryError(f"webhook {shown} failed: {type(exc).__name__}: {_masked(exc, url)}") from None


def _masked(exc: Exception, url: str) -> str:
    text = str(exc)
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "***") if password else text
