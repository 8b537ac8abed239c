"""The default SMS gateway: sends nothing, logs the message (its request and outcome are
already events on the message's stream). A real gateway implements the same port."""

from __future__ import annotations

import logging

log = logging.getLogger("gomobile.sms")


class LoggingSmsSender:
    def send(self, *, to: str, body: str, sender_id: str | None, message_id: str) -> str:
        log.info("sms to %s from %s: %s", to, sender_id or "-", body)
        return f"log-{message_id}"
