"""Import batches: store an upload, preview it, import it atomically, delete it.

Parsing and validation live in `labeling.importing` (pure); this module saves what it yields.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import logging
import re
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import IO, Any, BinaryIO

import django_rq
from django.conf import settings
from django.core.files import File
from django.db import connection, transaction
from django.utils import timezone
from psycopg.types.json import Jsonb
from rq.exceptions import NoSuchJobError
from rq.job import Callback, Job, JobStatus

from labeling import tally
from labeling.display import Shown, render_limits, shown
from labeling.importing import (
    ImportFormatError,
    ImportOptions,
    PairRecord,
    RecordError,
    detect_format,
    field_values,
    iter_records,
)
from labeling.models import Assignment, ImportBatch, Judgment, Pair, Project
from labeling.records import NOTE_UNAUDITED
from labeling.rendering import RenderLimits, render_pair
from prefstudio import jobs
from prefstudio.jobs import failure_reason
from prefstudio.uploads import OUT_OF_SPACE

logger = logging.getLogger(__name__)

ERRORS_SHOWN = 50
INSERT_BATCH = 2000
PROGRESS_EVERY = 1000
ANALYZE_AFTER = 5000
PREVIEW_RENDER_SECONDS = 0.2
FIELD_RECORDS = 200  # records read for the field mapping's names and the label's values
Progress = Callable[[int, int], None]


class BatchInUse(Exception):
    """The batch has judgments, so its pairs cannot be deleted."""


class ImportFailed(Exception):
    """The import stopped; the batch is marked failed with this message."""


@dataclass
class ImportSummary:
    format: str = ""
    records: int = 0
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    committed: bool = False
    left_out: int = 0
    cap: int = 0

    @property
    def text(self) -> str:
        if not self.committed:
            return (
                f"Nothing imported: {self.rejected} of {_count(self.records, 'record')} "
                f"{'is' if self.rejected == 1 else 'are'} invalid ({_count(self.error_count, 'problem')}). "
                "Fix them, or import with 'skip invalid records'."
            )
        parts = [f"{_count(self.imported, 'pair')} imported from {_count(self.records, 'record')}"]
        if self.duplicates:
            parts.append(f"{_count(self.duplicates, 'duplicate')} skipped")
        if self.rejected:
            parts.append(f"{_count(self.rejected, 'invalid record')} skipped")
        if self.left_out:
            parts.append(
                f"{_count(self.left_out, 'pair')} left out by the cap of {self.cap} pairs per record"
            )
        return ", ".join(parts) + "."


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def import_options(*, form: bool = True) -> ImportOptions:
    """The importer's limits, from the settings; problems point at the import page's Field mapping
    form (`form`), or at the command line's --map."""
    return ImportOptions(
        form=form,
        max_record_bytes=settings.PREFSTUDIO_MAX_RECORD_BYTES,
        max_pairs_per_record=settings.PREFSTUDIO_MAX_PAIRS_PER_RECORD,
        max_unpacked_bytes=settings.PREFSTUDIO_MAX_UNPACKED_BYTES,
        max_records=settings.PREFSTUDIO_MAX_RECORDS,
        parquet_chunk_bytes=settings.PREFSTUDIO_PARQUET_CHUNK_BYTES,
    )


def sniff_format(stream: BinaryIO, name: str) -> str:
    """The file's format from its first bytes (not its name); ImportFormatError when unsupported."""
    head = stream.read(65536)
    stream.seek(0)
    return detect_format(head, name)


def batch_create(*, project: Project, user: Any, upload: IO[bytes], source_name: str, size: int,
                 skip_invalid: bool, evaluation: bool = False) -> ImportBatch:  # fmt: skip
    """Store an uploaded file under a server-chosen name, after checking its content is a dataset.
    `evaluation`: its pairs are blind evaluation pairs, which no training export holds."""
    fmt = sniff_format(upload, source_name)
    batch = ImportBatch(
        project=project,
        created_by=user,
        source_name=source_name[:255],
        size_bytes=size,
        format=fmt,
        skip_invalid=skip_invalid,
        evaluation=evaluation,
    )
    name = batch.file.field.generate_filename(batch, "upload")
    storage = batch.file.storage
    try:
        batch.file.name = storage.save(name, File(upload), max_length=batch.file.field.max_length)
        batch.save()
    except BaseException as exc:
        # A partial file (a full disk stops the write half way) must not outlive the failed upload.
        with contextlib.suppress(OSError):
            storage.delete(name)
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            logger.error("Upload of %s to %s: out of disk space", source_name, name)
            uploads_sweep(older_than=SWEEP_GRACE)
            raise OutOfSpace() from exc
        raise
    return batch


class OutOfSpace(Exception):
    """The server's storage is full; str() is the user's message."""

    def __init__(self) -> None:
        super().__init__(OUT_OF_SPACE)


# Upload files younger than this are never swept: their batch row may still be on its way.
SWEEP_GRACE = timedelta(minutes=10)
SWEEP_EVERY = 600.0
_last_sweep = 0.0


def uploads_sweep(*, older_than: timedelta = SWEEP_GRACE) -> int:
    """Remove upload and report files under `imports/` that belong to no batch (left by a crash or a
    full disk mid-upload) and are older than `older_than`; how many were removed."""
    storage = ImportBatch._meta.get_field("file").storage
    known = set()
    for upload, report in ImportBatch.objects.values_list("file", "report"):
        known.update(name for name in (upload, report) if name)
    cutoff = timezone.now() - older_than
    removed = 0
    try:
        folders, _ = storage.listdir("imports")
    except FileNotFoundError:
        return 0
    for folder in folders:
        for file_name in storage.listdir(f"imports/{folder}")[1]:
            name = f"imports/{folder}/{file_name}"
            if name in known:
                continue
            with contextlib.suppress(OSError):
                if storage.get_modified_time(name) < cutoff:
                    storage.delete(name)
                    removed += 1
    if removed:
        logger.warning("Removed %d upload files that belonged to no import", removed)
    return removed


def uploads_sweep_now_and_then() -> int:
    """`uploads_sweep` at most every SWEEP_EVERY seconds per process: a reaper of the job machinery."""
    global _last_sweep
    now = time.monotonic()
    if _last_sweep and now - _last_sweep < SWEEP_EVERY:
        return 0
    _last_sweep = now
    return uploads_sweep()


@dataclass
class Preview:
    """What an upload holds before anything is saved: `items` (the first pairs and errors) and, over
    the first `records` records (all of them when `complete`), the layouts recognised, the fields kept
    as metadata, the notes, the empty responses, the pairs the cap left out, the records no layout
    fits, the valid and invalid records, the dataset's own labels of the valid pairs (`labels`: "a",
    "b" or "t" -> pairs), the records with a field that looks like the dataset's preference but is
    not read as its label (`unaudited`), and what importing the valid ones would do: pairs already in
    the project, pairs repeated within the file, and the pairs it would create."""

    items: list[PairRecord | RecordError] = field(default_factory=list)
    records: int = 0
    layouts: Counter[str] = field(default_factory=Counter)
    kept: set[str] = field(default_factory=set)
    notes: Counter[str] = field(default_factory=Counter)
    empty: int = 0
    left_out: int = 0
    unmatched: int = 0
    invalid: int = 0
    pairs: int = 0
    existing: int = 0
    repeated: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    unaudited: int = 0
    complete: bool = False
    hashes: Counter[str] = field(default_factory=Counter, repr=False)

    @property
    def valid(self) -> int:
        return self.records - self.invalid

    @property
    def new_pairs(self) -> int:
        return self.pairs - self.existing - self.repeated

    @property
    def kept_fields(self) -> list[str]:
        return sorted(self.kept)

    @property
    def layout_counts(self) -> list[tuple[str, int]]:
        return self.layouts.most_common()

    @property
    def note_counts(self) -> list[tuple[str, int]]:
        return self.notes.most_common()

    @property
    def labelled(self) -> int:
        """Valid pairs that carry the dataset's own label."""
        return self.labels.total()

    @property
    def label_counts(self) -> list[tuple[str, int]]:
        """("A better" | "B better" | "tie", pairs), for the labels present."""
        names = {"a": "A better", "b": "B better", "t": "tie"}
        return [(names[label], self.labels[label]) for label in names if self.labels[label]]

    def add(self, items: list[PairRecord | RecordError]) -> None:
        """Count one record's items."""
        self.records += 1
        pairs = [i for i in items if isinstance(i, PairRecord)]
        self.unmatched += any(isinstance(i, RecordError) and "no layout matches" in i.reason for i in items)
        for pair in pairs[:1]:
            self.layouts[pair.layout] += 1
            self.kept.update(pair.kept)
            self.notes.update(pair.notes)
            self.unaudited += any(note.startswith(NOTE_UNAUDITED) for note in pair.notes)
        self.empty += sum(pair.empty_sides for pair in pairs)
        if len(pairs) < len(items):  # an invalid record imports none of its pairs
            self.invalid += 1
            return
        self.left_out += sum(pair.left_out for pair in pairs)
        self.labels.update(pair.original_label for pair in pairs if pair.original_label)
        self.pairs += len(pairs)
        self.hashes.update(pair.content_hash for pair in pairs)

    def count_duplicates(self, project_id: int, *, chunk: int = 1000) -> None:
        """Split the valid pairs' repeats into those already in the project and those within the file."""
        hashes = list(self.hashes)
        existing = set()
        for start in range(0, len(hashes), chunk):
            existing.update(
                Pair.objects.filter(
                    project_id=project_id, content_hash__in=hashes[start : start + chunk]
                ).values_list("content_hash", flat=True)
            )
        self.existing = sum(self.hashes[h] for h in existing)
        self.repeated = sum(n - 1 for h, n in self.hashes.items() if h not in existing)


def batch_preview(batch: ImportBatch, *, limit: int = 10, scan: int | None = 500) -> Preview:
    """The first `limit` items (pairs or errors) of an uploaded batch's file, read with its mapping,
    and what its first `scan` records hold (every record when `scan` is None)."""
    preview = Preview()
    with batch.file.open("rb") as stream:
        records = iter_records(
            stream,
            filename=batch.source_name,
            fmt=batch.format,
            options=import_options(),
            mapping=batch.mapping,
        )
        for _, items in _by_record(records):
            preview.items.extend(items[: limit - len(preview.items)])
            preview.add(items)
            if scan is not None and preview.records >= scan:
                break
        else:
            preview.complete = True
    preview.count_duplicates(batch.project_id)
    return preview


def preview_shown(item: PairRecord) -> Shown:
    """A previewed pair as annotators will see it (labeling.display), response A on the left. Its
    render gets a fifth of a pair's time, at most: the preview lays out several pairs in one request,
    and a text that is slower than that shows as escaped plain text under a note."""
    limits = render_limits()
    limits = RenderLimits(max_chars=limits.max_chars, seconds=min(limits.seconds, PREVIEW_RENDER_SECONDS))
    pair = Pair(prompt=item.prompt, response_a=item.response_a, response_b=item.response_b)
    pair.rendered = render_pair(item.prompt, item.response_a, item.response_b, limits=limits)
    return shown(pair, a_on_left=True, plain=False)


def batch_fields(batch: ImportBatch) -> dict[str, list[str]]:
    """The field names of an uploaded batch's first records (with the paths into them), each with a few
    of its values, for its field mapping and the label's values."""
    with batch.file.open("rb") as stream:
        return field_values(stream, filename=batch.source_name, fmt=batch.format, records=FIELD_RECORDS)


def batch_read_size(batch: ImportBatch, *, limit: int) -> int:
    """How many bytes importing the batch's file will read, counted up to `limit` + 1: a gzipped
    file's unpacked size (decompressed, not taken from its header), a Parquet file's from its footer."""
    if batch.format == "parquet":
        import pyarrow
        import pyarrow.parquet

        try:
            with batch.file.open("rb") as stream:
                metadata = pyarrow.parquet.ParquetFile(stream).metadata
                return sum(
                    metadata.row_group(g).column(c).total_uncompressed_size
                    for g in range(metadata.num_row_groups)
                    for c in range(metadata.num_columns)
                )
        except (pyarrow.ArrowException, OSError):
            return batch.size_bytes  # the import reports what is wrong with it
    if not batch.format.endswith(".gz"):
        return batch.size_bytes
    read = 0
    try:
        with batch.file.open("rb") as stream, gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
            while read <= limit and (chunk := unpacked.read(1 << 20)):
                read += len(chunk)
    except (OSError, EOFError, zlib.error):
        pass  # corrupt: the import says so
    return read


def batch_in_background(batch: ImportBatch) -> bool:
    """Whether the import runs in a worker: when it will read more than PREFSTUDIO_IMPORT_SYNC_MAX_BYTES."""
    limit = settings.PREFSTUDIO_IMPORT_SYNC_MAX_BYTES
    return batch.size_bytes > limit or batch_read_size(batch, limit=limit) > limit


def batch_claim(batch: ImportBatch, *, background: bool) -> bool:
    """Take an uploaded batch for import: queued for a worker, or running in this request. Atomic: of
    several clicks on "Import the whole file" at once, one claims it and the others get False."""
    now, job_id = timezone.now(), str(uuid.uuid4()) if background else ""
    state = ImportBatch.State.QUEUED if background else ImportBatch.State.RUNNING
    claimed = ImportBatch.objects.filter(pk=batch.pk, state=ImportBatch.State.UPLOADED).update(
        state=state, job_id=job_id, started_at=now
    )
    if claimed:
        batch.state, batch.job_id, batch.started_at = state, job_id, now
    return bool(claimed)


def batch_unclaim(batch: ImportBatch) -> None:
    """Undo `batch_claim(background=True)` when its job could not be enqueued: the batch waits again."""
    ImportBatch.objects.filter(pk=batch.pk, state=ImportBatch.State.QUEUED, job_id=batch.job_id).update(
        state=ImportBatch.State.UPLOADED, job_id="", started_at=None
    )
    batch.state, batch.job_id, batch.started_at = ImportBatch.State.UPLOADED, "", None


def batch_run(batch: ImportBatch, *, progress: Progress | None = None, rerun: bool = False) -> ImportSummary:
    """Import a batch's file, record the outcome on the batch, and return it.

    The batch is claimed first if it is not yet (uploaded -> running; a worker's queued -> running;
    with `rerun`, running -> running: the job machinery's retry of a job whose first try lost its
    database connection, and with it the import's transaction). Raises ImportFailed, with the batch
    marked failed, when it cannot be claimed or the import stops for any reason: no batch is left running.
    """
    if batch.state != ImportBatch.State.RUNNING or batch.job_id:
        states = [ImportBatch.State.UPLOADED, ImportBatch.State.QUEUED]
        if rerun:
            states.append(ImportBatch.State.RUNNING)
        moved = ImportBatch.objects.filter(pk=batch.pk, state__in=states).update(
            state=ImportBatch.State.RUNNING, started_at=timezone.now()
        )
        if not moved:
            raise ImportFailed(f"{batch.source_name} is no longer waiting to be imported.")
        batch.state = ImportBatch.State.RUNNING
    try:
        with batch.file.open("rb") as stream:
            return import_stream(batch=batch, stream=stream, fmt=batch.format, progress=progress)
    except Exception as exc:
        if jobs.will_retry(exc):  # the job runs again on a fresh connection: nothing is recorded yet
            raise
        if isinstance(exc, ImportFormatError):
            message = str(exc)
        else:
            logger.exception("Import of batch %s stopped", batch.pk)
            message = failure_reason(exc, what=f"The import of {batch.source_name}")
        batch_fail(batch, message)
        raise ImportFailed(message) from exc


def batch_enqueue(batch: ImportBatch) -> None:
    """Hand a claimed import (`batch_claim(background=True)`) to a worker on the default queue; the
    batch page follows its progress."""
    jobs.enqueue(
        "default",
        "labeling.tasks.import_batch",
        batch.pk,
        job_id=batch.job_id,
        job_timeout=6 * 3600,
        on_failure=Callback("labeling.tasks.import_job_failed"),
    )


_RUNNING = (ImportBatch.State.QUEUED, ImportBatch.State.RUNNING)


def batch_progress(batch: ImportBatch) -> int | None:
    """Percent done of a background import, from its job; marks the batch failed if its job, worker
    or request is gone (`batch_check_lost`)."""
    if batch.state not in _RUNNING:
        return None
    job = _fetch_job(batch.job_id) if batch.job_id else None  # one read of Redis for both
    if _check_lost(batch, job) or job is None:
        return None
    done, total = job.meta.get("progress", (0, batch.size_bytes))
    return min(99, int(100 * done / total)) if total else 0


def batch_check_lost(batch: ImportBatch) -> bool:
    """Mark a queued or running import failed when nothing is working on it any more; True if so.

    In a worker: its job is gone from Redis, failed, stopped or canceled, or has sent no heartbeat
    for PREFSTUDIO_IMPORT_LOST_SECONDS (a killed worker). Inside a request: it started more than
    PREFSTUDIO_IMPORT_LOST_SECONDS ago, longer than any request may run.
    """
    if batch.state not in _RUNNING:
        return False
    return _check_lost(batch, _fetch_job(batch.job_id) if batch.job_id else None)


def _fetch_job(job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=django_rq.get_connection("default"))
    except NoSuchJobError:
        return None


def _check_lost(batch: ImportBatch, job: Job | None) -> bool:
    """`batch_check_lost` for a queued or running batch whose job (None: gone, or run by a request)
    the caller has read."""
    lost_seconds = settings.PREFSTUDIO_IMPORT_LOST_SECONDS
    before = timezone.now() - timedelta(seconds=lost_seconds)
    if not batch.job_id:
        if batch.started_at is not None and batch.started_at > before:
            return False
        reason = (
            f"The import stopped: the request importing it ended without finishing (it timed out, or its "
            f"server process was restarted). Import the file again. [no progress for {lost_seconds} s]"
        )
    else:
        reason = _job_lost(job, before)
        if reason is None:
            return False
    batch.refresh_from_db()
    if batch.finished:  # it finished while we looked
        return False
    batch_fail(batch, reason)
    return True


def _job_lost(job: Job | None, before: Any) -> str | None:
    """Why a batch's job (None: gone from Redis) is no longer working on it, or None while it is (or
    waits its turn)."""
    if job is None:
        return "The import job disappeared from the queue (Redis was flushed?). Upload the file again."
    status = job.get_status()
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        return jobs.reason_from_exc_info(job.exc_info or "", what="The import")
    if status == JobStatus.STARTED:
        beat = job.last_heartbeat or job.started_at
        if beat is not None:
            beat = beat.replace(tzinfo=UTC) if timezone.is_naive(beat) else beat
            if beat < before:
                return (
                    f"The import stopped: its worker ({job.worker_name or 'unknown'}) sent no sign of life "
                    f"since {beat:%Y-%m-%d %H:%M:%S} UTC; it was killed or lost. Import the file again."
                )
    return None


def batch_fail(batch: ImportBatch, message: str) -> None:
    batch.state = ImportBatch.State.FAILED
    batch.message = message
    batch.finished_at = timezone.now()
    batch.save(update_fields=["state", "message", "finished_at"])


def import_stream(
    *,
    batch: ImportBatch,
    stream: BinaryIO,
    fmt: str = "auto",
    progress: Progress | None = None,
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Read `stream` into `batch`'s project (with its field mapping): all or nothing, unless the batch
    skips invalid records.

    Pairs already in the project (same content hash) are counted as duplicates and not added again.
    Saves the counts, the first errors and (when skipping) a report of rejected records on the batch.
    """
    options = options or import_options()
    if fmt == "auto":
        fmt = sniff_format(stream, batch.source_name)
    batch.format = fmt
    summary = ImportSummary(format=fmt, cap=options.max_pairs_per_record)
    inserter = _Inserter(batch)
    records = iter_records(
        stream, filename=batch.source_name, fmt=fmt, options=options, mapping=batch.mapping
    )
    with tempfile.TemporaryFile() as file:
        report = _Rejected(file, settings.PREFSTUDIO_REJECTED_REPORT_RECORDS)
        with transaction.atomic():
            for line, items in _by_record(records):
                summary.records += 1
                if progress and summary.records % PROGRESS_EVERY == 0:
                    progress(_position(stream), batch.size_bytes)
                errors = [i for i in items if isinstance(i, RecordError)]
                if errors:
                    summary.rejected += 1
                    summary.error_count += len(errors)
                    summary.errors.extend(str(e) for e in errors[: ERRORS_SHOWN - len(summary.errors)])
                    if batch.skip_invalid:
                        report.add(line, errors)
                    continue
                if summary.error_count and not batch.skip_invalid:
                    continue  # the import will be rolled back; keep reading only to report every error
                summary.left_out += sum(item.left_out for item in items)
                inserter.add(items)
            if summary.error_count and not batch.skip_invalid:
                transaction.set_rollback(True)
            else:
                inserter.flush()
                summary.committed = True
                summary.imported, summary.duplicates = inserter.inserted, inserter.duplicates
        report.finish()
        _save_outcome(batch, summary, file if summary.rejected and batch.skip_invalid else None)
    if summary.imported:
        transaction.on_commit(lambda: _enqueue_render(batch))
    if (
        summary.imported >= ANALYZE_AFTER
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    ):
        _analyze_pairs()
    return summary


def _by_record(
    items: Iterator[PairRecord | RecordError],
) -> Iterator[tuple[int, list[PairRecord | RecordError]]]:
    """Group consecutive items of the same source line (a responses-list record yields several pairs)."""
    current: list[PairRecord | RecordError] = []
    for item in items:
        if current and item.line != current[0].line:
            yield current[0].line, current
            current = []
        current.append(item)
    if current:
        yield current[0].line, current


def _position(stream: BinaryIO) -> int:
    try:
        return stream.tell()
    except (OSError, ValueError):
        return 0


class _Rejected:
    """The report of rejected records: the first `limit` of them with their problems, then one line
    with every rejected record counted by reason (numbers in a reason stand as N), so that a file of
    millions of bad lines gives a report of bounded size."""

    def __init__(self, file: IO[bytes], limit: int) -> None:
        self.file, self.limit = file, limit
        self.written = self.rejected = 0
        self.reasons: Counter[str] = Counter()

    def add(self, line: int, errors: list[RecordError]) -> None:
        self.rejected += 1
        self.reasons.update({_NUMBERS.sub("N", e.reason) for e in errors})
        if self.written < self.limit:
            self.written += 1
            row = {
                errors[0].unit: line,
                "problems": [{"field": e.field, "reason": e.reason} for e in errors],
                "raw": errors[0].raw,
            }
            self.file.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")

    def finish(self) -> None:
        """Add the counts by reason when records were left out of the report."""
        if self.rejected > self.written:
            summary = {
                "rejected": self.rejected,
                "listed_above": self.written,
                "left_out": self.rejected - self.written,
                "by_reason": dict(self.reasons.most_common()),
            }
            self.file.write(json.dumps({"summary": summary}, ensure_ascii=False).encode("utf-8") + b"\n")


_NUMBERS = re.compile(r"\d[\d,]*")


_COLUMNS = ("external_id", "prompt", "response_a", "response_b", "model_a", "model_b", "metadata", "gold",
            "original_label", "shape", "content_hash")  # fmt: skip

# PostgreSQL's bulk path for imports, written out because COPY has no ORM form (with the claim in
# labeling/assignment.py, the only SQL text in the app). A batch of records is copied into a temporary
# table (made once per transaction, emptied per batch), then inserted with ON CONFLICT DO NOTHING: no
# model instances, and a concurrent import of the same pairs cannot abort this one. The columns are
# `_COLUMNS`, in its order; `_INSERT_STAGED` takes the project and the batch.
_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS prefstudio_pair_staging (external_id text, prompt jsonb, "
    "response_a text, response_b text, model_a text, model_b text, metadata jsonb, gold text, "
    "original_label text, shape text, content_hash text) ON COMMIT DROP"
)
_EMPTY_STAGE = "TRUNCATE prefstudio_pair_staging"
_COPY = (
    "COPY prefstudio_pair_staging (external_id, prompt, response_a, response_b, model_a, model_b, "
    "metadata, gold, original_label, shape, content_hash) FROM STDIN"
)
_INSERT_STAGED = (
    "INSERT INTO labeling_pair (project_id, batch_id, taken, created_at, external_id, prompt, response_a, "
    "response_b, model_a, model_b, metadata, gold, original_label, shape, content_hash) "
    "SELECT %s, %s, 0, now(), external_id, prompt, response_a, response_b, model_a, model_b, metadata, "
    "gold, original_label, shape, content_hash FROM prefstudio_pair_staging "
    "ON CONFLICT (project_id, content_hash) DO NOTHING"
)


def _analyze_pairs() -> None:
    """Fresh planner statistics after a large import, not when autovacuum gets to it: until then the
    planner misjudges the workbench's claim and count queries on the table (measured: 145 ms vs 12 ms)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE labeling_pair")


def _row(r: PairRecord, json: Callable[[Any], Any] = lambda value: value) -> tuple:
    """The record's values in `_COLUMNS` order; `json` wraps the JSON columns for the driver."""
    return (r.external_id[:255], json(r.prompt), r.response_a, r.response_b, r.model_a[:255], r.model_b[:255],
            json(r.metadata), r.gold or "", r.original_label or "", r.shape, r.content_hash)  # fmt: skip


class _Inserter:
    """Buffers pairs and inserts them, skipping content hashes the project already has.

    On PostgreSQL a batch goes through COPY (`_COPY` and the statements around it); elsewhere through
    `bulk_create`.
    """

    def __init__(self, batch: ImportBatch) -> None:
        self.batch = batch
        self.buffer: list[PairRecord] = []
        self.inserted = 0
        self.duplicates = 0
        self.staged = False

    def add(self, records: list[PairRecord]) -> None:
        self.buffer.extend(records)
        if len(self.buffer) >= INSERT_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        added = self._copy() if connection.vendor == "postgresql" else self._bulk_create()
        self.inserted += added
        self.duplicates += len(self.buffer) - added
        self.buffer.clear()

    def _copy(self) -> int:
        with connection.cursor() as cursor:
            if not self.staged:
                cursor.execute(_STAGE)
                self.staged = True
            cursor.execute(_EMPTY_STAGE)
            with cursor.copy(_COPY) as copy:
                for r in self.buffer:
                    copy.write_row(_row(r, Jsonb))
            cursor.execute(_INSERT_STAGED, [self.batch.project_id, self.batch.pk])
            return cursor.rowcount

    def _bulk_create(self) -> int:
        project_id = self.batch.project_id
        hashes = {r.content_hash for r in self.buffer}
        existing = set(
            Pair.objects.filter(project_id=project_id, content_hash__in=hashes).values_list(
                "content_hash", flat=True
            )
        )
        rows = []
        for r in self.buffer:
            if r.content_hash not in existing:
                existing.add(r.content_hash)
                rows.append(
                    Pair(project_id=project_id, batch=self.batch, **dict(zip(_COLUMNS, _row(r), strict=True)))
                )
        Pair.objects.bulk_create(rows, ignore_conflicts=True)
        return len(rows)


def _enqueue_render(batch: ImportBatch) -> None:
    """Render the new pairs in a worker. Without Redis the workbench renders each pair when it is
    first handed out, so nothing is lost; say so in the log."""
    try:
        jobs.enqueue("default", "labeling.tasks.render_batch", batch.pk, job_timeout=6 * 3600)
    except jobs.QueueUnavailable as exc:
        logger.warning("Batch %s: pairs will be rendered when first shown (no queue: %s)", batch.pk, exc)


def _save_outcome(batch: ImportBatch, summary: ImportSummary, report: IO[bytes] | None) -> None:
    batch.records = summary.records
    batch.imported = summary.imported
    batch.duplicates = summary.duplicates
    batch.rejected = summary.rejected
    batch.error_count = summary.error_count
    batch.errors = summary.errors
    batch.message = summary.text
    batch.state = ImportBatch.State.DONE if summary.committed else ImportBatch.State.FAILED
    batch.finished_at = timezone.now()
    if report is not None:
        if summary.rejected:
            report.seek(0)
            batch.report.save(
                f"imports/{batch.project_id}/{batch.uuid}.rejected.jsonl", File(report), save=False
            )
        report.close()
    batch.save()


def batch_delete(batch: ImportBatch) -> int:
    """Delete a batch, its pairs and its files; refuse when any of its pairs has judgments."""
    with transaction.atomic():
        if Judgment.objects.filter(pair__batch=batch).exists():
            raise BatchInUse(f"{batch.source_name} has judged pairs; it can no longer be deleted.")
        count = batch.pairs.count()
        files = [f for f in (batch.file, batch.report) if f]
        tally.forget(Assignment.objects.filter(pair__batch=batch))  # skips of its pairs go with them
        batch.delete()
    for f in files:
        f.storage.delete(f.name)
    return count
