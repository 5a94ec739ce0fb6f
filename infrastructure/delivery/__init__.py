"""Queue delivery adapters: QStash request signatures and the QStash publish client."""

from infrastructure.delivery.qstash_client import (
    PublishError,
    PublishRejected,
    PublishUnavailable,
    QStashPublishClient,
)
from infrastructure.delivery.qstash_signature import (
    InMemorySeenTokenIds,
    InvalidSignature,
    QStashSignatureVerifier,
    SeenTokenIds,
)

__all__ = [
    "InMemorySeenTokenIds",
    "InvalidSignature",
    "PublishError",
    "PublishRejected",
    "PublishUnavailable",
    "QStashPublishClient",
    "QStashSignatureVerifier",
    "SeenTokenIds",
]
