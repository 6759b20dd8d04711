"""What auditors and regulators read: nightly compliance alerts, the compliance report (HTML
+ CSV), the FCC RND and 二次号码焕新 exports, per-number evidence summaries, and proof of
notification (downloads × feed rows × acknowledgements). Owns the ``alert_acks`` and FCC
tables (:mod:`pipelines.compliance.schema`).
"""
