"""The Call lifecycle as a state machine (hypothesis): random sequences of claims,
provider callbacks (duplicated, late, for the wrong attempt), outcomes, skips, deferrals
and clock moves, against a small model written from DOMAIN.md §6.3 and §7.4.

Checked after every step: the aggregate agrees with the model; a fact that does not
apply records nothing; an attempt is claimed at most once; attempts never exceed what
the retry rules allow; a finished call has exactly one final result and never changes
again; replaying the recorded events gives the same call."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from domain import base
from domain.call import LIVE, AlreadyClaimed, Call
from domain.retry import RetryStrategy

T0 = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)
RETRYABLE = {"busy", "no_answer", "rejected", "failed"}
PROVIDER_ENDS = ["completed", "busy", "no_answer", "rejected", "failed"]


@st.composite
def retry_strategies(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "fixed_delay", "scheduled"]))
    data: dict[str, Any] = {"type": kind}
    if kind == "fixed_delay":
        data |= {"delayMinutes": draw(st.integers(0, 90)), "maxRetries": draw(st.integers(0, 3))}
    elif kind == "scheduled":
        offsets = draw(st.lists(st.integers(1, 48 * 60), min_size=1, max_size=3))
        data["retryDates"] = [(T0 + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%SZ") for m in offsets]
    if kind != "none" and draw(st.booleans()):
        data["retryOnVoicemail"] = True
    rules = draw(st.dictionaries(st.sampled_from(["busy", "no_answer", "rejected", "failed", "voicemail"]),
                                 st.fixed_dictionaries({"maxRetries": st.integers(0, 2), "delayMinutes": st.integers(0, 30)}),
                                 max_size=2))
    if rules:
        data["outcomes"] = rules
    if draw(st.booleans()):
        data["completionRetry"] = {"maxRetries": draw(st.integers(0, 2)), "delayMinutes": draw(st.integers(0, 30))}
    return data


class CallModel:
    """What DOMAIN.md says should happen, independently of domain.retry."""

    def __init__(self, strategy: dict[str, Any], not_before: datetime) -> None:
        self.strategy = strategy
        self.status = "pending"
        self.attempt = 1
        self.not_before = not_before
        self.answered_by: str | None = None
        self.placed = False
        self.outcomes: list[str] = []
        self.result: str | None = None

    def max_attempts(self) -> int:
        """An upper bound on attempts from the rules alone: the first, every base retry,
        every per-outcome retry and every completion retry."""
        s = self.strategy
        base_retries = {"none": 0, "fixed_delay": s.get("maxRetries", 0), "scheduled": len(s.get("retryDates", []))}[s["type"]]
        rules = sum(r["maxRetries"] for r in s.get("outcomes", {}).values())
        completion = s.get("completionRetry", {}).get("maxRetries", 0)
        return 1 + base_retries + rules + completion

    def retry_at(self, outcome: str, now: datetime) -> datetime | None:
        s = self.strategy
        rule = s.get("outcomes", {}).get(outcome)
        if outcome == "incomplete":
            rule = s.get("completionRetry")
            if rule is None:
                return None
        if rule is not None:  # a rule counts the attempts that ended with its own outcome
            if self.outcomes.count(outcome) > rule["maxRetries"]:
                return None
            return now + timedelta(minutes=rule["delayMinutes"])
        if outcome not in RETRYABLE and not (outcome == "voicemail" and s.get("retryOnVoicemail")):
            return None
        if s["type"] == "fixed_delay" and self.attempt <= s["maxRetries"]:
            return now + timedelta(minutes=s["delayMinutes"])
        if s["type"] == "scheduled" and self.attempt <= len(s["retryDates"]):
            dates = sorted(datetime.fromisoformat(d) for d in s["retryDates"])
            return max(dates[self.attempt - 1], now)
        return None


class CallLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.previous_clock = base._clock[0]
        base.set_clock(lambda: self.now)
        self.events: list[Any] = []

    @initialize(strategy=retry_strategies(), delay=st.integers(0, 60))
    def queue(self, strategy: dict[str, Any], delay: int) -> None:
        self.strategy = RetryStrategy.parse(strategy)
        not_before = T0 + timedelta(minutes=delay)
        contact = uuid4()
        self.call = Call(uuid4(), contact, uuid4(), uuid4(), "+212612345674", {"id": str(contact)}, not_before)
        self.model = CallModel(strategy, not_before)
        self._collect()

    def teardown(self) -> None:
        base.set_clock(self.previous_clock)

    def _collect(self) -> list[Any]:
        new = self.call.collect_events()
        self.events += new
        return new

    def _nothing_recorded(self) -> None:
        assert self._collect() == []

    def _attempt(self, offset: int) -> int:
        return self.model.attempt + offset

    # -- the clock --------------------------------------------------------------------

    @rule(minutes=st.integers(1, 24 * 60))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    # -- dialling ---------------------------------------------------------------------

    @rule(offset=st.sampled_from([0, 0, 0, -1, 1]))
    def claim(self, offset: int) -> None:
        m = self.model
        attempt = self._attempt(offset)
        allowed = m.status == "pending" and attempt == m.attempt and self.now >= m.not_before
        if not allowed:
            try:
                self.call.claim(attempt, self.now, "w")
            except AlreadyClaimed:
                self._nothing_recorded()
                return
            raise AssertionError(f"claimed attempt {attempt} while the model is {m.status}/{m.attempt}")
        self.call.claim(attempt, self.now, "w")
        m.status, m.answered_by, m.placed = "dialing", None, False
        assert [type(e).__name__ for e in self._collect()] == ["DialClaimed"]

    @rule(offset=st.sampled_from([0, 0, -1]))
    def placed(self, offset: int) -> None:
        # The worker records the provider's id after the dial returns, so it can arrive
        # after the attempt's callbacks: once per attempt, for the current attempt only,
        # and never after the call finished (nothing follows Finished).
        m = self.model
        attempt = self._attempt(offset)
        self.call.record_placed(attempt, f"CA{len(self.events)}", "+212500000001")
        expected = attempt == m.attempt and not m.placed and m.status != "finished"
        assert [type(e).__name__ for e in self._collect()] == (["Placed"] if expected else [])
        if expected:
            m.placed = True

    @rule(offset=st.sampled_from([0, 0, -1]))
    def ringing(self, offset: int) -> None:
        m = self.model
        attempt = self._attempt(offset)
        self.call.record_ringing(attempt)
        expected = attempt == m.attempt and m.status == "dialing"
        assert [type(e).__name__ for e in self._collect()] == (["Ringing"] if expected else [])
        if expected:
            m.status = "ringing"

    @rule(offset=st.sampled_from([0, 0, -1]), by=st.sampled_from([None, "human", "machine"]))
    def answered(self, offset: int, by: str | None) -> None:
        m = self.model
        attempt = self._attempt(offset)
        self.call.record_answered(attempt, by)
        expected = attempt == m.attempt and m.status in ("dialing", "ringing")
        assert [type(e).__name__ for e in self._collect()] == (["Answered"] if expected else [])
        if expected:
            m.status, m.answered_by = "in_progress", by or "human"

    @rule(offset=st.sampled_from([0, 0, 0, -1]), status=st.sampled_from(PROVIDER_ENDS), flow_completed=st.booleans())
    def attempt_ends(self, offset: int, status: str, flow_completed: bool) -> None:
        m = self.model
        attempt = self._attempt(offset)
        applies = attempt == m.attempt and m.status in LIVE
        got = self.call.end_attempt(attempt, status, None, 1000, self.now, self.strategy, flow_completed=flow_completed)
        new = [type(e).__name__ for e in self._collect()]
        assert got == applies
        if not applies:
            assert new == []
            return
        outcome = status
        if status == "completed" and m.answered_by == "machine":
            outcome = "voicemail"
        elif status == "completed" and not flow_completed:
            outcome = "incomplete"
        m.outcomes.append(outcome)
        retry_at = m.retry_at(outcome, self.now)
        if retry_at is not None:
            assert new == ["AttemptEnded", "RetryScheduled"]
            m.status, m.attempt, m.not_before = "pending", m.attempt + 1, retry_at
        else:
            assert new == ["AttemptEnded", "Finished"]
            m.status, m.result = "finished", "completed" if outcome == "completed" else "failed"

    # -- waiting and giving up ----------------------------------------------------------

    @rule(offset=st.sampled_from([0, 0, -1]), minutes=st.integers(-30, 120))
    def deferred(self, offset: int, minutes: int) -> None:
        m = self.model
        attempt = self._attempt(offset)
        until = m.not_before + timedelta(minutes=minutes)
        self.call.defer(attempt, until, "window")
        expected = m.status == "pending" and attempt == m.attempt and until > m.not_before
        assert [type(e).__name__ for e in self._collect()] == (["Deferred"] if expected else [])
        if expected:
            m.not_before = until

    @rule()
    def skipped(self) -> None:
        m = self.model
        assert self.call.skip("execution_ended", self.now) == (m.status == "pending")
        new = [type(e).__name__ for e in self._collect()]
        if m.status == "pending":
            assert new == ["Skipped"]
            m.status, m.result = "finished", "skipped"
        else:
            assert new == []

    # -- what must always hold ---------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        c, m = self.call, self.model
        assert (c.status, c.attempt, c.not_before, c.result, c.outcomes) == (m.status, m.attempt, m.not_before, m.result, m.outcomes)

    @invariant()
    def attempts_stay_within_the_rules(self) -> None:
        assert self.call.attempt <= self.model.max_attempts()
        if self.model.strategy["type"] == "none" and not self.model.strategy.get("outcomes") and "completionRetry" not in self.model.strategy:
            assert self.call.attempt == 1

    @invariant()
    def each_attempt_is_claimed_at_most_once(self) -> None:
        claims = Counter(e.attempt for e in self.events if type(e).__name__ == "DialClaimed")
        assert all(n == 1 for n in claims.values()), claims
        assert set(claims) <= set(range(1, self.call.attempt + 1))

    @invariant()
    def one_final_state(self) -> None:
        finals = [type(e).__name__ for e in self.events if type(e).__name__ in ("Finished", "Skipped")]
        if self.call.status == "finished":
            assert len(finals) == 1 and self.call.result in ("completed", "failed", "skipped")
        else:
            assert finals == [] and self.call.result is None

    @invariant()
    def the_events_rebuild_the_call(self) -> None:
        rebuilt: Any = None
        for e in self.events:
            rebuilt = e.mutate(rebuilt)
        assert rebuilt.__dict__ == self.call.__dict__


CallLifecycle.TestCase.settings = settings(max_examples=150, stateful_step_count=50, deadline=None)
test_call_lifecycle = CallLifecycle.TestCase
