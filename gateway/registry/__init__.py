"""The control plane's registry: model versions, their packages, and what backends serve.

See :mod:`gateway.registry.service` for the push order that makes a push atomic, and
:mod:`gateway.registry.numbering` for how versions are numbered.
"""

from gateway.registry.audit import AuditEvent
from gateway.registry.records import ModelSummary, PushPhase, PushResult, PushStatus, VersionRecord
from gateway.registry.service import Registry
from gateway.registry.tables import State

__all__ = [
    "AuditEvent",
    "ModelSummary",
    "PushPhase",
    "PushResult",
    "PushStatus",
    "Registry",
    "State",
    "VersionRecord",
]
