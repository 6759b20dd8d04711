"""What auditors and regulators read: nightly compliance alerts, the compliance report (HTML
+ CSV), the FCC RND and 二次号码焕新 exports, per-number evidence summaries, and proof of
notification (downloads × feed rows × acknowledgements). Owns the ``alert_acks`` and FCC
tables (:mod:`pipelines.compliance.schema`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipelines.lazy import lazy_attributes

if TYPE_CHECKING:
    from pipelines.compliance.alerts import check_compliance, evaluate_compliance, nightly_alerts
    from pipelines.compliance.evidence_summary import render_evidence_summary
    from pipelines.compliance.exports import export_cn_renewal, export_fcc_disconnects
    from pipelines.compliance.notifications import new_owner_view, notification_evidence
    from pipelines.compliance.report import build_report

# Names load on first use: db.schema imports compliance.schema for every state file, which
# must not pull in plotly (report), the server's token store (notifications) and pyarrow.
_LAZY = {
    "check_compliance": "pipelines.compliance.alerts",
    "evaluate_compliance": "pipelines.compliance.alerts",
    "nightly_alerts": "pipelines.compliance.alerts",
    "render_evidence_summary": "pipelines.compliance.evidence_summary",
    "export_cn_renewal": "pipelines.compliance.exports",
    "export_fcc_disconnects": "pipelines.compliance.exports",
    "new_owner_view": "pipelines.compliance.notifications",
    "notification_evidence": "pipelines.compliance.notifications",
    "build_report": "pipelines.compliance.report",
}

__getattr__ = lazy_attributes(__name__, _LAZY)


__all__ = [
    "build_report",
    "check_compliance",
    "evaluate_compliance",
    "export_cn_renewal",
    "export_fcc_disconnects",
    "new_owner_view",
    "nightly_alerts",
    "notification_evidence",
    "render_evidence_summary",
]
