"""The ``alerts:`` section: who hears of what, checked like every other key.

A rule names events and one or two channels. Secrets never sit in YAML: ``smtp`` and ``url``
name the environment variables that hold the SMTP URL and the webhook URL, read when a
message is sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from core4_resources.config.masking import mask_url

EVENTS = ("file_rejected", "batch_failed", "zombie", "freshness", "supervision")
FORMATS = ("slack", "teams", "json")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RULE = ConfigDict(frozen=True, strict=True, extra="forbid")


def _env_name(value: str, what: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"the name of the environment variable that holds the {what} (e.g. "
                         f"{'SMTP_URL' if what == 'SMTP URL' else 'ALERT_WEBHOOK_URL'}), not the {what} itself: "
                         "a secret stays out of YAML")
    return value


class EmailChannel(BaseModel):
    model_config = _RULE

    to: tuple[str, ...] = Field(description="a list of e-mail addresses")
    smtp: str = Field(description="the name of an environment variable holding smtp://[user:password@]host[:port]")
    sender: str | None = Field(None, alias="from", description="the sender's address (default core4@<this host>)")

    @field_validator("to", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value or not all(isinstance(a, str) and "@" in a for a in value):
                raise ValueError("a list of e-mail addresses such as [ops@example.org]")
            return tuple(value)
        return value

    @field_validator("smtp")
    @classmethod
    def _smtp_name(cls, value: str) -> str:
        return _env_name(value, "SMTP URL")


class WebhookChannel(BaseModel):
    model_config = _RULE

    url: str = Field(description="the name of an environment variable holding the webhook's URL")
    format: Literal["slack", "teams", "json"] = "json"

    @field_validator("url")
    @classmethod
    def _url_name(cls, value: str) -> str:
        return _env_name(value, "webhook URL")


class AlertRule(BaseModel):
    model_config = _RULE

    events: tuple[str, ...] = Field(description=f"a list of events: {', '.join(EVENTS)}")
    email: EmailChannel | None = None
    webhook: WebhookChannel | None = None
    where: str = ""  # the file (and position) the rule is read from: set by the loader

    @field_validator("events", mode="before")
    @classmethod
    def _known_events(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ValueError(f"a non-empty list of events: {', '.join(EVENTS)}")
        unknown = [e for e in value if e not in EVENTS]
        if unknown:
            raise ValueError(f"events among {', '.join(EVENTS)} ({unknown[0]!r} is none of them)")
        return tuple(value)

    def channels(self) -> list[str]:
        return [name for name in ("email", "webhook") if getattr(self, name) is not None]


def parse_alert_rules(raw: Any, prefix: str, where: str, errors: list[str]) -> tuple[AlertRule, ...]:
    """The rules of one ``alerts:`` list; each problem appended to ``errors`` naming
    ``prefix`` (e.g. ``alerts`` or ``demo.alerts``), the rule's position and key, and ``where``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors.append(f"{prefix} {where}: expected a list of rules (- events: [...], email: ... or webhook: ...), "
                      f"got {type(raw).__name__}")
        return ()
    rules = []
    for position, item in enumerate(raw):
        at = f"{prefix}[{position}]"
        if not isinstance(item, dict):
            errors.append(f"{at} {where}: expected a rule (events: [...], email: ... or webhook: ...), "
                          f"got {type(item).__name__}")
            continue
        if "where" in item:
            errors.append(f"unknown key '{at}.where' {where}: expected events, email, webhook")
            continue
        try:
            rule = AlertRule.model_validate({**item, "where": f"{at} {where}"})
        except ValidationError as exc:
            errors.extend(_problems(exc, at, where))
            continue
        if not rule.channels():
            errors.append(f"{at} {where}: no channel: give it email: {{to: [...], smtp: SMTP_URL}} "
                          "or webhook: {url: ALERT_WEBHOOK_URL, format: slack}")
            continue
        rules.append(rule)
    return tuple(rules)


def _problems(exc: ValidationError, at: str, where: str) -> Sequence[str]:
    lines, seen = [], set()
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        path = ".".join([at, *loc])
        if path in seen:
            continue
        seen.add(path)
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown key '{path}' {where}: expected "
                         + {1: "events, email, webhook", 2: _channel_keys(loc[0])}.get(len(loc), "no key here"))
        elif error["type"] == "missing":
            lines.append(f"{path} {where}: missing")
        elif error["type"] == "value_error":
            lines.append(f"{path} {where}: expected {error['ctx']['error']}, got {_shown(error['input'])}")
        elif error["type"] == "literal_error":
            lines.append(f"{path} {where}: expected one of {', '.join(FORMATS)}, got {_shown(error['input'])}")
        else:
            lines.append(f"{path} {where}: {error['msg']}, got {_shown(error['input'])}")
    return lines


def _channel_keys(channel: str) -> str:
    return {"email": "to, smtp, from", "webhook": "url, format"}.get(channel, "events, email, webhook")


def _shown(value: Any) -> str:
    return repr(mask_url(value)) if isinstance(value, str) else repr(value)
