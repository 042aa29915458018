"""The audit: read back what ShopiMind holds, compare it with the shop's rows mapped exactly as
a pass maps them, report every difference (missing, stale, ghost) and optionally repair it.

Modules: :mod:`~connector.audit.readback` (ShopiMind's list and single reads, within the
audit's share of the budget: :mod:`~connector.audit.share`), :mod:`~connector.audit.shopside`
(the shop's rows, mapped), :mod:`~connector.audit.compare` (by the API's types),
:mod:`~connector.audit.report` (results, status summary, warnings),
:mod:`~connector.audit.repair`, :mod:`~connector.audit.run` (one mapping) and
:mod:`~connector.audit.resume` (a resumable run over several).
"""

from connector.audit.report import META, MappingAudit, Repair, format_text, load, log_result
from connector.audit.resume import audit_all
from connector.audit.run import AuditOptions, audit_mapping, auditable
from connector.audit.share import DEFAULT_SHARE, AuditShare

__all__ = [
    "DEFAULT_SHARE",
    "META",
    "AuditOptions",
    "AuditShare",
    "MappingAudit",
    "Repair",
    "audit_all",
    "audit_mapping",
    "auditable",
    "format_text",
    "load",
    "log_result",
]
