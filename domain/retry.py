"""Retry strategies of programs (DOMAIN.md §6.3): when a contact's next attempt is due."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from domain.errors import InvalidRetryStrategyError, ValidationError
from domain.timeparse import parse_instant

# Outcomes that trigger a retry (voicemail only when asked to).
RETRYABLE = frozenset({"busy", "no_answer", "rejected", "failed"})


RULE_OUTCOMES = ("busy", "no_answer", "rejected", "failed", "voicemail")


@dataclass(frozen=True, order=True)
class OutcomeRule:
    max_retries: int
    delay_minutes: float

    @classmethod
    def parse(cls, data: Any, where: str) -> OutcomeRule:
        if not isinstance(data, dict):
            raise InvalidRetryStrategyError(f"{where} must be {{maxRetries, delayMinutes}}")
        retries, delay = data.get("maxRetries"), data.get("delayMinutes", 0)
        if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
            raise InvalidRetryStrategyError(f"{where}.maxRetries must be an integer between 0 and 20")
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 43200:
            raise InvalidRetryStrategyError(f"{where}.delayMinutes must be a number of minutes between 0 and 43200")
        return cls(retries, float(delay))

    def to_json(self) -> dict[str, Any]:
        d = self.delay_minutes
        return {"maxRetries": self.max_retries, "delayMinutes": int(d) if d.is_integer() else d}


@dataclass(frozen=True)
class RetryStrategy:
    type: str
    delay_minutes: float = 0
    max_retries: int = 0
    retry_dates: tuple[datetime, ...] = ()
    retry_voicemail: bool = False
    # Ours: per-outcome rules {outcome: OutcomeRule} and a completion retry (a person
    # answered but the flow never completed: outcome "incomplete").
    outcome_rules: tuple[tuple[str, OutcomeRule], ...] = ()
    completion: OutcomeRule | None = None

    @classmethod
    def parse(cls, data: Any) -> RetryStrategy:
        base = cls._parse_base(data)
        rules = []
        raw_rules = data.get("outcomes")
        if raw_rules is not None:
            if not isinstance(raw_rules, dict):
                raise InvalidRetryStrategyError("retryStrategy.outcomes must map outcomes to {maxRetries, delayMinutes}")
            for outcome, rule in raw_rules.items():
                if outcome not in RULE_OUTCOMES:
                    raise InvalidRetryStrategyError(
                        f"retryStrategy.outcomes.{outcome} is not an outcome ({', '.join(RULE_OUTCOMES)})"
                    )
                rules.append((outcome, OutcomeRule.parse(rule, f"retryStrategy.outcomes.{outcome}")))
        completion = None
        if data.get("completionRetry") is not None:
            completion = OutcomeRule.parse(data["completionRetry"], "retryStrategy.completionRetry")
        return replace(base, outcome_rules=tuple(sorted(rules)), completion=completion)

    @classmethod
    def _parse_base(cls, data: Any) -> RetryStrategy:
        if not isinstance(data, dict) or "type" not in data:
            raise InvalidRetryStrategyError(
                "retryStrategy must be an object with a type: none, fixed_delay or scheduled",
                field="retryStrategy",
            )
        unknown = set(data) - {"type", "delayMinutes", "maxRetries", "retryDates", "retryOnVoicemail", "outcomes", "completionRetry"}
        if unknown:
            raise InvalidRetryStrategyError(f"retryStrategy has unknown field(s): {', '.join(sorted(unknown))}")
        kind = data["type"]
        voicemail = data.get("retryOnVoicemail", False)
        if not isinstance(voicemail, bool):
            raise InvalidRetryStrategyError("retryStrategy.retryOnVoicemail must be a boolean")
        if kind == "none":
            return cls("none")
        if kind == "fixed_delay":
            delay, retries = data.get("delayMinutes"), data.get("maxRetries")
            if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= 43200:
                raise InvalidRetryStrategyError(
                    "retryStrategy.delayMinutes must be a number of minutes between 0 and 43200"
                )
            if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 20:
                raise InvalidRetryStrategyError(
                    "retryStrategy.maxRetries must be an integer between 0 and 20"
                )
            return cls("fixed_delay", float(delay), retries, retry_voicemail=voicemail)
        if kind == "scheduled":
            dates = data.get("retryDates")
            if not isinstance(dates, list) or not dates or len(dates) > 20:
                raise InvalidRetryStrategyError(
                    "retryStrategy.retryDates must be a list of 1 to 20 ISO 8601 date-times"
                )
            try:
                parsed = tuple(sorted(parse_instant(d, "retryStrategy.retryDates") for d in dates))
            except ValidationError as exc:  # one error code for every bad retry strategy
                raise InvalidRetryStrategyError(exc.message, field="retryStrategy.retryDates") from None
            return cls("scheduled", 0, len(parsed), parsed, voicemail)
        raise InvalidRetryStrategyError(
            f"retryStrategy.type '{kind}' is unknown (none, fixed_delay or scheduled)"
        )

    def to_json(self) -> dict[str, Any]:
        out = self._base_json()
        if self.outcome_rules:
            out["outcomes"] = {o: r.to_json() for o, r in self.outcome_rules}
        if self.completion is not None:
            out["completionRetry"] = self.completion.to_json()
        return out

    def _base_json(self) -> dict[str, Any]:
        if self.type == "none":
            return {"type": "none"}
        if self.type == "fixed_delay":
            delay: float | int = int(self.delay_minutes) if self.delay_minutes.is_integer() else self.delay_minutes
            out: dict[str, Any] = {"type": "fixed_delay", "delayMinutes": delay, "maxRetries": self.max_retries}
        else:
            from domain.timeparse import format_instant

            out = {"type": "scheduled", "retryDates": [format_instant(d) for d in self.retry_dates]}
        if self.retry_voicemail:
            out["retryOnVoicemail"] = True
        return out

    def next_attempt_at(
        self, attempt: int, outcome: str, ended_at: datetime, history: list[str] | None = None
    ) -> datetime | None:
        """When attempt ``attempt + 1`` is due after ``outcome``, or None if the contact is done.

        ``history`` is every attempt's outcome so far, this one included: a per-outcome
        rule allows ``maxRetries`` retries after attempts that ended with that outcome."""
        rule = dict(self.outcome_rules).get(outcome)
        if outcome == "incomplete":
            rule = self.completion
            if rule is None:
                return None
        if rule is not None:
            times = (history or [outcome]).count(outcome)
            if times > rule.max_retries:
                return None
            return ended_at + timedelta(minutes=rule.delay_minutes)
        if outcome not in RETRYABLE and not (outcome == "voicemail" and self.retry_voicemail):
            return None
        if attempt > self.max_retries:
            return None
        if self.type == "fixed_delay":
            return ended_at + timedelta(minutes=self.delay_minutes)
        if self.type == "scheduled":
            return max(self.retry_dates[attempt - 1], ended_at)
        return None
