"""The images of messages: stored with them in the database (`SqlAttachmentStore`), behind
`AttachmentStore` so that a directory or object store can take their place."""

from memory.attachments.store import AttachmentStore, SqlAttachmentStore

__all__ = ["AttachmentStore", "SqlAttachmentStore"]
