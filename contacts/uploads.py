"""The size limit of CSV imports (settings.CRM_IMPORT_MAX_MB), applied while the file streams in."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest

_MB = 1024 * 1024
# What surrounds the file in a multipart body (boundaries, part headers, the CSRF field): a
# request this much larger than the limit may still carry a file within it.
_FORM_OVERHEAD = 64 * 1024
_DRAIN_MAX_FACTOR = 10


class ImportUploadLimit(FileUploadHandler):
    """Stop the upload once the request or its files are over the limit; `refusal` says so.

    It must come first in `request.upload_handlers` (see `limit_import_upload`): the handlers
    after it, which keep the file in memory or on disk, then never get more than the limit.
    """

    def __init__(self, request: HttpRequest | None = None) -> None:
        super().__init__(request)
        self.max_bytes = settings.CRM_IMPORT_MAX_MB * _MB
        self.request_size = 0
        self.received = 0
        self.refusal = ""

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: bytes,
        encoding: str | None = None,
    ) -> None:
        # META["CONTENT_LENGTH"], parsed. Django reads no body without one (WSGI and ASGI
        # alike), so this is the request's real size.
        self.request_size = content_length

    def new_file(self, *args: Any, **kwargs: Any) -> None:
        super().new_file(*args, **kwargs)
        # Known before any of the file is read: refuse it before the first chunk.
        if self.request_size > self.max_bytes + _FORM_OVERHEAD:
            self._stop()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self._stop()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    def _stop(self) -> None:
        size = max(self.request_size, self.received) / _MB
        # Rounded, but never shown as the limit itself: "10.0 MB; the largest is 10 MB" reads odd.
        shown = max(round(size, 1), settings.CRM_IMPORT_MAX_MB + 0.1)
        self.refusal = (
            f"The file is {shown:.1f} MB; the largest import is {settings.CRM_IMPORT_MAX_MB} MB. "
            "Split it into smaller files."
        )
        # Reading (and dropping) the rest lets the browser show this message rather than
        # "connection reset"; a request far over the limit is not worth that time.
        raise StopUpload(connection_reset=self.request_size > _DRAIN_MAX_FACTOR * self.max_bytes)


def limit_import_upload(request: HttpRequest) -> ImportUploadLimit:
    """Install the import size limit on `request`, before anything reads its body."""
    limit = ImportUploadLimit(request)
    request.upload_handlers.insert(0, limit)
    return limit
