"""The node catalogue: each module registers its node types by ``type`` name."""

from domain.flows.nodes import audio, call, contact, dtmf, logic, recording, transfer, webhook  # noqa: F401
from domain.flows.nodes.base import NODE_TYPES, Jump, Next, NodeType, Stop, Wait

__all__ = ["NODE_TYPES", "Jump", "Next", "NodeType", "Stop", "Wait"]
