"""What platforms download: the wire types (signed envelopes of root, manifest, timestamp and
query receipts, parsed strictly, unknown fields kept), the signed daily recycled-number feed
with its manifest chain, and the immutable query snapshot the server answers from.
"""

from pipelines.feeds.publish import FeedPaths, FeedReport, publish_feed
from pipelines.feeds.query_snapshot import publish_snapshot

__all__ = [
    "FeedPaths",
    "FeedReport",
    "publish_feed",
    "publish_snapshot",
]
