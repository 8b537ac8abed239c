"""What every node type provides, and the registry that finds it by its ``type`` name.

A node type validates its config (``check``), names the variables it sets and the
templates it renders (for validation of ``$variables`` references), and runs:
``enter`` when the walk reaches it, ``resume`` when the phone network (or, for a
webhook, the application) reports the result the node was waiting for. Both return
an outcome: ``Next`` (leave through the first of these outputs that is wired, else
``default``), ``Wait`` (the call waits for a result) or ``Stop`` (the call ends here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from domain.flows.issues import FlowIssue


@dataclass(frozen=True)
class Next:
    outputs: tuple[str, ...]
    dead_end: str = "flow_end"  # the hangup reason when none of the outputs is wired


@dataclass(frozen=True)
class Wait:
    """The node waits for a result (keys, speech, a recording, a transfer, an HTTP answer)."""


@dataclass(frozen=True)
class Stop:
    reason: str
    hangup: bool = True


@dataclass(frozen=True)
class Jump:
    """Hand a result to another node, as if that node had been waiting for it (a key
    pressed during a barge-in prompt goes to the prompt's dtmf node); ``output`` is the
    path recorded for the node that jumps."""

    node_id: str
    result: dict[str, Any]
    output: str


Outcome = Next | Wait | Stop | Jump


class Walk(Protocol):
    """What a node may do to the call while the engine walks the graph."""

    state: Any
    context: dict[str, Any]
    answered_by: str | None
    unanswered_outcome: str | None
    request: dict[str, Any] | None
    input: dict[str, Any] | None

    def emit(self, type_: str, node: dict[str, Any], **data: Any) -> None: ...

    def instruct(self, instruction: dict[str, Any]) -> None: ...

    def set_variable(self, node: dict[str, Any], name: str, value: Any) -> None: ...

    def render(self, text: str) -> str: ...

    def value(self, value: Any) -> Any: ...


class NodeType:
    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]] = ("onComplete", "onError", "default")
    terminal: ClassVar[bool] = False  # ends the call (hangup, opt_out)
    needs_caller: ClassVar[bool] = True  # cannot run on a call nobody answered

    def check(self, nid: str, config: dict[str, Any]) -> list[FlowIssue]:
        return []

    def assigns(self, config: dict[str, Any]) -> list[str]:
        """Flow variables this node sets."""
        return []

    def templates(self, config: dict[str, Any]) -> list[tuple[str, Any]]:
        """(field, value) pairs that are rendered as templates or resolved as value sources."""
        return []

    def enter(self, walk: Walk, node: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    def resume(self, walk: Walk, node: dict[str, Any], result: dict[str, Any]) -> Outcome:
        raise NotImplementedError(f"a {self.name} node does not wait for a result")


NODE_TYPES: dict[str, NodeType] = {}


def register(cls: type[NodeType]) -> type[NodeType]:
    NODE_TYPES[cls.name] = cls()
    return cls


def failed(walk: Walk, node: dict[str, Any], why: str, otherwise: str) -> Next:
    """A node that could not do its work at run time (a value that resolved to nothing, a
    text that rendered empty ...): a ``node_error`` event says why, and the call leaves by
    ``onError``, or, where the flow does not wire it, goes on by ``otherwise`` (these
    errors are not fatal: a missing balance must not end the call)."""
    walk.emit("node_error", node, why=why)
    return Next(("onError", otherwise))


def unresolved(value: Any, resolved: Any) -> str | None:
    """Why a value source (``{"source": ...}``) points at nothing for this call, or None."""
    if not (isinstance(value, dict) and "source" in value and resolved in (None, "")):
        return None
    source = value.get("source")
    if source == "variable":
        return f"the variable '{value.get('variableName')}' is not set"
    if source == "customAttribute":
        return f"the contact has no value for '{value.get('attributeName')}'"
    return f"the contact has no {value.get('field')}"


# -- config checks shared by node types ----------------------------------------------------


def number(config: dict[str, Any], key: str, nid: str, lo: float, hi: float, *, where: str = "config") -> list[FlowIssue]:
    v = config.get(key)
    if v is None:
        return []
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
        return [FlowIssue(nid, f"{where}.{key}", f"must be a number between {lo:g} and {hi:g}")]
    return []


def boolean(config: dict[str, Any], key: str, nid: str) -> list[FlowIssue]:
    v = config.get(key)
    if v is not None and not isinstance(v, bool):
        return [FlowIssue(nid, f"config.{key}", "must be true or false")]
    return []


def text(config: dict[str, Any], key: str, nid: str, *, required: bool = False) -> list[FlowIssue]:
    v = config.get(key)
    if v is None:
        return [FlowIssue(nid, f"config.{key}", "is required")] if required else []
    if not isinstance(v, str) or (required and not v.strip()):
        return [FlowIssue(nid, f"config.{key}", "must be a non-empty string" if required else "must be a string")]
    return []


def variable_name(config: dict[str, Any], key: str, nid: str, *, required: bool = False) -> list[FlowIssue]:
    v = config.get(key)
    if v is None:
        return [FlowIssue(nid, f"config.{key}", "is required (a variable name)")] if required else []
    if not isinstance(v, str) or not v.isidentifier():
        return [FlowIssue(nid, f"config.{key}", f"'{v}' is not a variable name (letters, digits, _)")]
    return []


def one_of(config: dict[str, Any], key: str, nid: str, allowed: tuple[str, ...]) -> list[FlowIssue]:
    v = config.get(key)
    if v is not None and v not in allowed:
        return [FlowIssue(nid, f"config.{key}", f"'{v}' is not one of {', '.join(allowed)}")]
    return []


def seconds(ms: Any, default_ms: int) -> int:
    """A millisecond config value as whole seconds for TwiML (at least 1)."""
    return max(1, round((ms if isinstance(ms, (int, float)) and not isinstance(ms, bool) else default_ms) / 1000))
