"""Files through Django's storage API: imports and export snapshots in the `default` storage, run artifacts
and checkpoints in the `artifacts` storage (settings.STORAGES). Both are folders on the local disk unless
django-storages' S3 settings are in the environment (prefstudio/settings.py); then they are prefixes in one
S3-compatible bucket, and a worker that shares no disk with the web process works on a local copy
(`PREFSTUDIO_CACHE_DIR`) that it downloads from and uploads to the bucket.

Names are storage names ("exports/<uuid>/train.jsonl", "runs/7/adapter_model.safetensors"): forward
slashes, relative to the storage's root. Every transfer streams in chunks, so memory does not grow with a
file's size: uploads are boto3's multipart transfers from the file on disk, downloads one GET whose body is
copied 1 MiB at a time (bench/storage.py measured both against boto3's alternatives: a managed upload of a
file object held ~140 MB of parts against ~46 MB; ranged parallel downloads took 137 s against 6 s for 1.3 GB
from moto, which re-reads the whole object for each range).
"""

from __future__ import annotations

import mimetypes
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.http import FileResponse, HttpResponse, HttpResponseRedirect
from django.utils.functional import cached_property

MEDIA = "default"
ARTIFACTS = "artifacts"
CHUNK = 1 << 20  # bytes per read when a file is copied or streamed


class ArtifactStorage(FileSystemStorage):
    """The local `artifacts` storage: a folder at settings.ARTIFACT_ROOT (followed when it changes)."""

    @cached_property
    def base_location(self) -> str:
        return self._value_or_setting(self._location, settings.ARTIFACT_ROOT)

    def _clear_cached_properties(self, setting: str, **kwargs: Any) -> None:
        super()._clear_cached_properties(setting, **kwargs)
        if setting == "ARTIFACT_ROOT":
            self.__dict__.pop("base_location", None)
            self.__dict__.pop("location", None)


def media() -> Storage:
    """Imports and export snapshots."""
    return storages[MEDIA]


def artifacts() -> Storage:
    """Run artifacts: adapters, tokenizers, run cards, checkpoints, reference caches."""
    return storages[ARTIFACTS]


def local_path(storage: Storage, name: str) -> Path | None:
    """Where `name` lies on this machine's disk when the storage is a local folder; None for a remote
    storage (an S3 bucket), whose files are reached by `download` and `upload`."""
    if isinstance(storage, FileSystemStorage):
        return Path(storage.path(name))
    return None


def is_remote(storage: Storage) -> bool:
    """Whether the storage lies off this machine (it has no local path)."""
    return not isinstance(storage, FileSystemStorage)


def describe(storage: Storage, name: str) -> str:
    """Where `name` is, for people: its local path, or "s3://bucket/location/name"."""
    path = local_path(storage, name)
    if path is not None:
        return str(path)
    bucket, location = getattr(storage, "bucket_name", "?"), getattr(storage, "location", "")
    return "s3://" + posixpath.join(bucket, location, name)


def cache_dir(*parts: str) -> Path:
    """A folder under PREFSTUDIO_CACHE_DIR for local copies of remote files (made when missing)."""
    path = Path(settings.PREFSTUDIO_CACHE_DIR).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _s3_object(storage: Storage, name: str) -> Any:
    """The boto3 `s3.Object` behind `name` in a django-storages S3 storage (its key carries the storage's
    location prefix). Raises FileNotFoundError when there is no such object."""
    return storage.open(name, "rb").obj


def _s3_new_object(storage: Storage, name: str) -> Any:
    """The boto3 `s3.Object` that `name` will be, under the storage's location (its own name rules:
    django-storages' `clean_name` and `_normalize_name`, which refuses a name that leaves the location)."""
    from storages.utils import clean_name

    return storage.bucket.Object(storage._normalize_name(clean_name(name)))


def upload(storage: Storage, name: str, source: Path) -> None:
    """Store the local file `source` as `name`, replacing what was there. On disk the copy is written beside
    the target and renamed over it, so a reader never sees half a file; on S3 it is a multipart upload.
    Nothing is done when `source` already is the stored file."""
    target = local_path(storage, name)
    if target is not None:
        if target.exists() and target.resolve() == Path(source).resolve():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as tmp,
            open(source, "rb") as src,
        ):
            shutil.copyfileobj(src, tmp, CHUNK)
        os.replace(tmp.name, target)
        return
    if hasattr(storage, "transfer_config"):  # django-storages' S3: a multipart upload from the file itself
        extra = {"ContentType": mimetypes.guess_type(name)[0] or "application/octet-stream"}
        extra.update(storage.get_object_parameters(name))
        target_object = _s3_new_object(storage, name)
        target_object.upload_file(str(source), ExtraArgs=extra, Config=storage.transfer_config)
        return
    with open(source, "rb") as src:  # another remote storage: its own save
        stored = storage.save(name, File(src, name=Path(name).name))
    if stored != name:
        raise RuntimeError(f"storage kept {name!r} as {stored!r}: it must overwrite, not rename")


def download(storage: Storage, name: str, target: Path) -> Path:
    """Copy the stored `name` to the local file `target` (written beside it, then renamed, so a copy cut
    short never passes for a whole one); returns `target`. Raises FileNotFoundError when it is missing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            source = open_stream(storage, name)
            try:
                shutil.copyfileobj(source, out, CHUNK)
            finally:
                source.close()
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def local_copy(storage: Storage, name: str, *cache: str) -> Path:
    """A path on this machine holding the stored `name`: the file itself on a local storage, otherwise a
    copy under PREFSTUDIO_CACHE_DIR/<cache...>/ made once (kept while its size matches the stored one)."""
    path = local_path(storage, name)
    if path is not None:
        return path
    target = cache_dir(*cache) / Path(name).name
    if not (target.is_file() and target.stat().st_size == storage.size(name)):
        download(storage, name, target)
    return target


def open_stream(storage: Storage, name: str) -> IO[bytes]:
    """The stored file for reading front to back in chunks (`read(n)`, `close()`); on S3 the object's body
    as it arrives, never spooled whole. Raises FileNotFoundError when it is missing."""
    if is_remote(storage) and hasattr(storage, "transfer_config"):
        return _s3_object(storage, name).get()["Body"]
    return storage.open(name, "rb")


def iter_chunks(storage: Storage, name: str, size: int = CHUNK) -> Iterator[bytes]:
    """The stored file's bytes in chunks of at most `size`."""
    stream = open_stream(storage, name)
    try:
        while chunk := stream.read(size):
            yield chunk
    finally:
        stream.close()


def walk(storage: Storage, prefix: str) -> list[str]:
    """Every file name under the folder `prefix`, recursively, sorted; [] when there is none."""
    try:
        folders, files = storage.listdir(prefix)
    except FileNotFoundError:
        return []
    names = [f"{prefix}/{name}" for name in files]
    for folder in folders:
        names += walk(storage, f"{prefix}/{folder}")
    return sorted(names)


def delete_tree(storage: Storage, prefix: str) -> int:
    """Delete every file under the folder `prefix` (and, on disk, the folder); how many files went."""
    names = walk(storage, prefix)
    for name in names:
        storage.delete(name)
    folder = local_path(storage, prefix)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
    return len(names)


class Mirror:
    """Keeps the folder `prefix` of a storage equal to a local folder that a job writes into, uploading only
    files that changed since the last `push` (by size and modification time) and deleting stored files
    that are gone locally (pruned checkpoints). Names starting with "." (partial writes) are skipped; the
    job may go on writing during a push (a launched run does): what changes meanwhile goes at the next.
    On a local storage whose folder is the local folder itself every call is a no-op."""

    def __init__(self, storage: Storage, prefix: str, folder: Path) -> None:
        self.storage, self.prefix, self.folder = storage, prefix.rstrip("/"), Path(folder)
        self.same = local_path(storage, self.prefix) == self.folder
        self.sent: dict[str, tuple[int, int]] = {}

    def _local_files(self) -> dict[str, Path]:
        if not self.folder.is_dir():
            return {}
        found = {}
        for path in self.folder.rglob("*"):
            relative = path.relative_to(self.folder)
            if path.is_file() and not any(part.startswith(".") for part in relative.parts):
                found[relative.as_posix()] = path
        return found

    def pull(self) -> int:
        """Download every stored file under the prefix that the local folder lacks or holds at another
        size; how many came. The files pulled count as sent."""
        if self.same:
            return 0
        pulled = 0
        for name in walk(self.storage, self.prefix):
            relative = name[len(self.prefix) + 1 :]
            target = self.folder / relative
            if not (target.is_file() and target.stat().st_size == self.storage.size(name)):
                download(self.storage, name, target)
                pulled += 1
            stat = target.stat()
            self.sent[relative] = (stat.st_size, stat.st_mtime_ns)
        return pulled

    def push(self) -> int:
        """Upload what changed and delete what went; how many files were uploaded."""
        if self.same:
            return 0
        local = self._local_files()
        uploaded = 0
        for relative, path in sorted(local.items()):
            try:  # a file the job removes meanwhile (a pruned checkpoint) is left to the next push
                stat = path.stat()
                mark = (stat.st_size, stat.st_mtime_ns)
                if self.sent.get(relative) != mark:
                    upload(self.storage, f"{self.prefix}/{relative}", path)
                    self.sent[relative] = mark
                    uploaded += 1
            except FileNotFoundError:
                local.pop(relative)
        for name in walk(self.storage, self.prefix):
            relative = name[len(self.prefix) + 1 :]
            if relative not in local:
                self.storage.delete(name)
                self.sent.pop(relative, None)
        return uploaded


def serve(storage: Storage, name: str, *, filename: str, content_type: str) -> HttpResponse:
    """The response that hands a stored file to a person already allowed to have it: a redirect to a
    presigned URL valid for PREFSTUDIO_DOWNLOAD_URL_SECONDS when PREFSTUDIO_PRESIGNED_DOWNLOADS is on and the
    storage is S3, otherwise the file streamed through this process in chunks. Raises FileNotFoundError when
    the file is missing."""
    if settings.PREFSTUDIO_PRESIGNED_DOWNLOADS and is_remote(storage) and hasattr(storage, "transfer_config"):
        if not storage.exists(name):
            raise FileNotFoundError(name)
        url = storage.url(
            name,
            parameters={
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
                "ResponseContentType": content_type,
            },
            expire=settings.PREFSTUDIO_DOWNLOAD_URL_SECONDS,
        )
        return HttpResponseRedirect(url)
    if is_remote(storage) and hasattr(storage, "transfer_config"):
        stored = _s3_object(storage, name)  # one HEAD: its length; then one GET streams it
        size, stream = stored.content_length, stored.get()["Body"]
    else:
        size, stream = storage.size(name), storage.open(name, "rb")
    response = FileResponse(stream, as_attachment=True, filename=filename, content_type=content_type)
    response["Content-Length"] = str(size)
    response.block_size = CHUNK  # FileResponse's default is 4 KiB reads
    return response
