"""Upload handlers: Django's own, with the client's file name shortened before anything uses it.

Django writes a large upload to a temporary file named after the upload's extension, so a name with a
250-character "extension" failed the request with "File name too long". The name is display only
(uploads are stored under server-chosen names), so it is shortened here, and the file object says
what it was (`shortened_from`) for the page to tell.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler, StopUpload, TemporaryFileUploadHandler

OUT_OF_SPACE = "The server is out of disk space: the file was not stored. Ask an administrator to free some."
NAME_CHARS = 120
EXTENSION_CHARS = 16


def short_name(name: str) -> str:
    """`name` cut to NAME_CHARS characters, keeping an extension of up to EXTENSION_CHARS ("data.jsonl.gz"
    stays as it is; a longer "extension" is part of the name)."""
    stem, extension = os.path.splitext(name)
    if len(extension) > EXTENSION_CHARS:
        stem, extension = name, ""
    if len(stem) + len(extension) <= NAME_CHARS:
        return stem + extension
    return stem[: NAME_CHARS - len(extension) - 1] + "…" + extension


class _ShortName:
    original = ""

    def new_file(self, field_name: str, file_name: str, *args: Any, **kwargs: Any) -> None:
        self.original = file_name
        super().new_file(field_name, short_name(file_name), *args, **kwargs)  # type: ignore[misc]

    def file_complete(self, file_size: int) -> UploadedFile | None:
        file = super().file_complete(file_size)  # type: ignore[misc]
        if file is not None and file.name != self.original:
            file.shortened_from = self.original
        return file


class ShortNameMemoryFileUploadHandler(_ShortName, MemoryFileUploadHandler):
    """Django's in-memory handler (small uploads), with the file name shortened."""


class ShortNameTemporaryFileUploadHandler(_ShortName, TemporaryFileUploadHandler):
    """Django's temporary-file handler (large uploads), with the file name shortened. A temporary folder
    that is full stops the upload instead of failing the request: the partial file is removed and the
    view finds the reason in `request.upload_stopped`."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        try:
            return super().receive_data_chunk(raw_data, start)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self.file.close()  # a NamedTemporaryFile: closing it removes it
            if self.request is not None:
                self.request.upload_stopped = OUT_OF_SPACE
            raise StopUpload(connection_reset=False) from exc
