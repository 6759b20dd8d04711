"""Drop files into rows: every line of a night's drops is accepted into its kind's table or
quarantined with a reason code and its original line (``rows_in == accepted + quarantined``).
``read`` gets the lines (bounded, encodings per file), ``records`` joins quoted records that span
lines, ``spec`` holds the column contracts and the SQL judgement,
``phone_classes`` the number classes decided by ``phonenumbers``, ``gx`` the Great Expectations
gate, ``drops`` drives a night, ``quarantine`` opens a night's sealed refused lines for an
operator (listed masked, exported in clear on request). Owns the tables in :mod:`pipelines.ingest.schema`.
"""

from pipelines.ingest.drops import FileReport, IngestReport, ingest_day

__all__ = [
    "FileReport",
    "IngestReport",
    "ingest_day",
]
