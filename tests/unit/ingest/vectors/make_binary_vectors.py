"""Writes the vectors that are not plain UTF-8 text. Run from this folder; outputs are committed.

Hand-made for tests/unit/test_ingest.py (no external source): a GBK export with full-width
digits and Chinese text, a UTF-8-with-BOM ``|`` export with CRLF line ends, a Parquet reissue
drop, and a file with one line that is neither UTF-8 nor GBK.
"""

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq

HEADER = "msisdn,event,effective_date,region,subscriber_ref,tenure_start,contact_email,contact_phone,language"

gbk_lines = [
    HEADER,
    "１３８１２３４５６７８,cancel,2026-01-05,GD,S1,2019-01-01,,,zh-CN",
    "13812345679,销户,2026-01-05,GD,S2,,,,zh-CN",
    "13812345680,cancel,2026-01-05,广东,S3,,,,zh-CN",
    "13812345681,port_in,2026-01-05,HA,张三-S4,2026-01-05,,,zh-CN",
]
with open("lifecycle_gbk.csv", "wb") as fh:
    fh.write(("\n".join(gbk_lines) + "\n").encode("gbk"))

bom_lines = [
    "msisdn|tenure_start|region|subscriber_ref|contact_email|contact_phone|language",
    "13812340001|2015-06-01|GD|T1|a.b@example.cn|+86 139 0000 0001|en",
    "13812340002|2026-01-06|GD|T2|||zh-CN",
    "13812340003|2015-06-01|ZZ|T3|||zh-CN",
    "13812340004|2015-06-01|gd|T4|||EN",
]
with open("subscribers_bom_pipe.csv", "wb") as fh:
    fh.write(b"\xef\xbb\xbf" + ("\r\n".join(bom_lines) + "\r\n").encode("utf-8"))

table = pa.table(
    {
        "msisdn": ["+8613812345678", "1381234", "13812345680", "+8613812345678", None],
        "reissue_date": [
            dt.date(2026, 1, 5),
            dt.date(2026, 1, 5),
            dt.date(2026, 1, 7),
            dt.date(2026, 1, 5),
            dt.date(2026, 1, 5),
        ],
        "region": ["GD", "GD", "GD", "GD", "SH"],
        "subscriber_ref": ["N1", "N2", "N3", "N1", "N5"],
    }
)
pq.write_table(table, "reissue_rows.parquet")

with open("lifecycle_undecodable.csv", "wb") as fh:
    fh.write((HEADER + "\n").encode())
    fh.write(b"13812345678,cancel,2026-01-05,GD,S1,,,,zh-CN\n")
    fh.write(b"13812345679,cancel,2026-01-05,GD,S\xff\xfe\xfd2,,,,zh-CN\n")
    fh.write("13812345680,cancel,2026-01-05,GD,S3,,,,中文\n".encode())
