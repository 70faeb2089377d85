"""Reading preference-pair files (JSONL, gzipped JSONL, one JSON document, CSV / TSV, Parquet) into
validated pairs and errors, as a stream.

Pure Python: this module must not import Django. What one record yields is `labeling.records`'
business, which layout it has `labeling.layouts`'. Problems say where: "line N" in JSONL, "row N"
in CSV (the header is row 1, as in a spreadsheet) and Parquet, "record N" in a JSON document.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from labeling.conversations import content_hash, prompt_key, response_key
from labeling.layouts import KNOWN_KEYS, LAYOUTS, field_sources, no_layout_reason, path_steps, value_key
from labeling.records import (
    DEFAULT_OPTIONS,
    RAW_CHARS,
    Completion,
    ImportOptions,
    PairRecord,
    RecordError,
    loads,
    parse_record,
    plural,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "FORMATS",
    "ImportFormatError",
    "ImportOptions",
    "PairRecord",
    "RecordError",
    "content_hash",
    "detect_format",
    "iter_records",
    "parse_record",
]

FORMATS = ("jsonl", "jsonl.gz", "json", "json.gz", "csv", "parquet")
DELIMITERS = (",", ";", "\t")

_BOM = b"\xef\xbb\xbf"
_HEAD_BYTES = 65536
_ORDINARY = re.compile(rb'[^",;\t\r\n]+')
_NAME = re.compile(r"[\w .()/#-]{1,100}")
_OTHER_SEPARATORS = ("|", ":", "^", "~", "#", "/")
_DELIMITER_NAMES = {",": "commas", ";": "semicolons", "\t": "tabs"}
_LFS = b"version https://git-lfs."
_LFS_SIZE = re.compile(rb"^size (\d+)", re.MULTILINE)

Item = PairRecord | RecordError


class ImportFormatError(ValueError):
    """The file as a whole cannot be imported (unknown format, empty, bad header, corrupt container)."""


def _first_byte(data: bytes) -> bytes:
    return data.removeprefix(_BOM).lstrip()[:1]


def _json_kind(head: bytes) -> str | None:
    """'json' for one JSON document (an array, or objects over several lines), 'jsonl' for one object
    per line, None for neither, judged from the first bytes (`_HEAD_BYTES` of them, or the whole file)."""
    first = _first_byte(head)
    if first == b"[":
        return "json"
    if first != b"{":
        return None
    text = head.removeprefix(_BOM).decode("utf-8", "ignore").lstrip()
    first_line, newline, _ = text.partition("\n")
    if not newline:
        return "jsonl"  # one line so far: a record too long for the head, or the only one
    try:
        json.loads(first_line)
    except json.JSONDecodeError as exc:
        if exc.pos < len(first_line.rstrip()):
            return "jsonl"  # a syntax error inside the line: a malformed JSON line, reported as such
        if len(head) >= _HEAD_BYTES:
            return "json"  # an object left open at the end of its line, in a long file: pretty-printed
        try:
            _, end = json.JSONDecoder().raw_decode(text)
        except json.JSONDecodeError:
            return "jsonl"  # broken lines, each reported on its own
        return "json" if end > len(first_line) else "jsonl"
    return "jsonl"


def _cells(line: str, delimiter: str) -> list[str]:
    """One line of CSV as cells ([] when it is not a line of CSV)."""
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return []


def _looks_like_csv_header(head: bytes) -> bool:
    try:
        text = head.removeprefix(_BOM).split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return False
    for separator in (*DELIMITERS, "|"):
        cells = _cells(text, separator)
        if len(cells) >= 2 and all(_NAME.fullmatch(cell.strip()) for cell in cells):
            return True
    return False


def _check_lfs(head: bytes, name: str) -> None:
    """ImportFormatError for a Git LFS pointer: a repository's stand-in for a large file, not the file."""
    if not head.removeprefix(_BOM).startswith(_LFS):
        return
    size = _LFS_SIZE.search(head[:1024])
    of = f" of a {size_text(int(size.group(1)))} file" if size else ""
    raise ImportFormatError(
        f"{name}: this is a Git LFS pointer{of}, not the data; fetch the file itself (git lfs pull in the "
        "repository, or the dataset's download link) and import that"
    )


def detect_format(head: bytes, filename: str = "") -> str:
    """The format (one of FORMATS) of a file judged from its first bytes, not its name."""
    name = filename or "the file"
    _check_lfs(head, name)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = zlib.decompressobj(wbits=31).decompress(head, _HEAD_BYTES)
        except zlib.error as exc:
            raise ImportFormatError(f"{name}: corrupt gzip data ({exc})") from exc
        if kind := _json_kind(inner):
            return f"{kind}.gz"
        raise ImportFormatError(f"{name}: gzip-compressed, but does not hold JSON lines or a JSON document")
    if not _first_byte(head):
        raise ImportFormatError(f"{name}: the file is empty")
    if kind := _json_kind(head):
        return kind
    if _looks_like_csv_header(head):
        return "csv"
    raise ImportFormatError(f"{name}: unrecognized format; expected JSONL, a JSON document, CSV or Parquet")


def _size_reason(size: int, limit: int) -> str:
    return f"record is {size:,} bytes; the limit is {limit:,}"


def size_text(size: float) -> str:
    """A byte count for people: "312 bytes", "1.5 MB", "2.0 GB" (powers of 1024)."""
    if size < 1024:
        return f"{int(size)} bytes"
    for unit in ("KB", "MB", "GB", "TB"):
        size /= 1024
        if size < 1024 or unit == "TB":
            break
    return f"{size:.1f} {unit}"


def _unpacked_error(filename: str, limit: int) -> ImportFormatError:
    return ImportFormatError(
        f"{filename}: more than {size_text(limit)} once unpacked; the limit per file is {size_text(limit)} "
        "(PREFSTUDIO_MAX_UNPACKED_BYTES). Split the file and import the parts."
    )


class _Capped:
    """A binary stream that raises ImportFormatError once more than `limit` bytes were read from it:
    what a file unpacks to is capped as it is read, whatever its compressed size or its header say."""

    def __init__(self, stream: BinaryIO, limit: int, filename: str) -> None:
        self.stream, self.limit, self.filename, self.taken = stream, limit, filename, 0

    def _count(self, data: bytes) -> bytes:
        self.taken += len(data)
        if self.taken > self.limit:
            raise _unpacked_error(self.filename, self.limit)
        return data

    def read(self, size: int = -1) -> bytes:
        return self._count(self.stream.read(size if size >= 0 else self.limit + 1 - self.taken))

    def readline(self, size: int = -1) -> bytes:
        return self._count(self.stream.readline(size if size >= 0 else self.limit + 1 - self.taken))

    def tell(self) -> int:
        return self.stream.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.stream.seek(offset, whence)


def _read_line(
    stream: BinaryIO, limit: int, state: int | None = None, delimiter: bytes = b","
) -> tuple[bytes, int, int | None] | None:
    """The next line with its terminator, its size without, and for a line over `limit` only its head and,
    given a CSV `state` to start from, the state after it (see _scan)."""
    chunk = stream.readline(limit + 2)
    if chunk.endswith(b"\n") or len(chunk) < limit + 2:
        return (chunk, len(chunk.removesuffix(b"\n").removesuffix(b"\r")), None) if chunk else None
    size, piece = 0, chunk
    while piece:
        size += len(piece)
        state = None if state is None else _scan(piece, state, delimiter)
        if piece.endswith(b"\n"):
            break
        piece = stream.readline(_HEAD_BYTES)
    size -= len(piece) - len(piece.removesuffix(b"\n").removesuffix(b"\r"))
    return chunk[: RAW_CHARS * 4], size, state


def _scan(data: bytes, state: int, delimiter: bytes = b",") -> int:
    """The csv module's state after reading `data` from `state`.

    0: start of a field, 1: in an unquoted field, 2: in a quoted field, 3: after a quote in a quoted
    field. A record goes on past a line break only in state 2.
    """
    ends = b"\r\n" + delimiter
    for char in _ORDINARY.sub(b"x", data):
        if state == 2:
            state = 3 if char == 34 else 2
        elif char == 34 and state != 1:
            state = 2
        else:
            state = 0 if char in ends else 1
    return state


def _decode(data: bytes, first: bool) -> tuple[str, str | None]:
    """The text of one physical line and, when its bytes are not UTF-8, why."""
    data = data.removeprefix(_BOM) if first else data
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return data.decode("utf-8", "replace"), f"invalid UTF-8 at byte {exc.start}"


Reader = Iterator[Item | Completion]


def _iter_jsonl(
    stream: BinaryIO, filename: str, options: ImportOptions, mapping: Mapping[str, str]
) -> Reader:
    limit, number = options.max_record_bytes, 0
    while (read := _read_line(stream, limit)) is not None:
        number += 1
        text, problem = _decode(read[0].removesuffix(b"\n").removesuffix(b"\r"), number == 1)
        raw = text[:RAW_CHARS]
        if read[1] > limit:
            problem = _size_reason(read[1], limit)
        elif not problem and not text.strip():
            continue
        obj, problem = (None, problem) if problem else loads(text)
        if problem:
            yield RecordError(filename, number, None, problem, raw)
        else:
            yield from parse_record(
                obj, file=filename, line=number, raw=raw, options=options, mapping=mapping
            )


def _document(text: str, filename: str) -> list[object]:
    """The records of one JSON document: the items of an array, or one or more objects in a row."""
    decoder, values = json.JSONDecoder(), []
    space = re.compile(r"\s*")
    pos = space.match(text).end()
    array = text.startswith("[", pos)
    pos = space.match(text, pos + 1 if array else pos).end()
    try:
        while pos < len(text) and not (array and text.startswith("]", pos)):
            value, pos = decoder.raw_decode(text, pos)
            values.append(value)
            pos = space.match(text, pos).end()
            if array and text.startswith(",", pos):
                pos = space.match(text, pos + 1).end()
            elif array and not text.startswith("]", pos):
                raise json.JSONDecodeError("Expecting ',' or ']' between records", text, pos)
        if array and space.match(text, pos + 1).end() < len(text):
            raise json.JSONDecodeError("Extra data after the array", text, pos + 1)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ImportFormatError(
            f"{filename}: one JSON document, not one record per line, and it does not parse: {message}{where}"
        ) from None
    return values


def _iter_json(stream: BinaryIO, filename: str, options: ImportOptions, mapping: Mapping[str, str]) -> Reader:
    limit = options.max_document_bytes
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ImportFormatError(
            f"{filename}: one JSON document of more than {limit // 2**20} MB, not one record per line; "
            f"convert it to JSON Lines (e.g. jq -c '.[]' {filename} > records.jsonl) and upload that"
        )
    text, problem = _decode(data, True)
    if problem:
        raise ImportFormatError(f"{filename}: {problem}")
    for number, obj in enumerate(_document(text, filename), start=1):
        raw = json.dumps(obj, ensure_ascii=False)
        size = len(raw.encode("utf-8", "surrogatepass"))
        if size > options.max_record_bytes:
            yield RecordError(
                filename,
                number,
                None,
                _size_reason(size, options.max_record_bytes),
                raw[:RAW_CHARS],
                "record",
            )
        else:
            yield from parse_record(
                obj, file=filename, line=number, raw=raw, options=options, mapping=mapping, unit="record"
            )


def _gunzipped(reader: Callable) -> Callable:
    def read(stream: BinaryIO, filename: str, options: ImportOptions, mapping: Mapping[str, str]) -> Reader:
        unpacked = _Capped(gzip.GzipFile(fileobj=stream, mode="rb"), options.max_unpacked_bytes, filename)
        try:
            yield from reader(unpacked, filename, options, mapping)
        except (OSError, EOFError, zlib.error) as exc:
            raise ImportFormatError(f"{filename}: corrupt gzip data ({exc})") from exc

    return read


class _Lines:
    """Physical lines of a byte stream as text for the csv module, noting what each record consumed.

    A record over the limit is read to its end without being kept, and the csv module sees it end at once.
    """

    def __init__(self, stream: BinaryIO, limit: int, delimiter: str) -> None:
        self.stream, self.limit, self.number = stream, limit, 0
        self.delimiter = delimiter.encode()
        self.raw, self.size, self.record_lines = "", 0, 0
        self.problems: list[tuple[int, str]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        # The csv module asks for another line of the same record only from inside a quoted cell.
        start = 2 if self.record_lines else 0
        read = _read_line(self.stream, self.limit, start, self.delimiter)
        if read is None:
            raise StopIteration
        data, size, state = read
        self.number, self.record_lines, self.size = self.number + 1, self.record_lines + 1, self.size + size
        text, problem = _decode(data, self.number == 1)
        self.raw += text[: max(0, RAW_CHARS - len(self.raw))]
        if self.size <= self.limit:
            self.problems += [(self.number, problem)] if problem else []
            return text
        state = _scan(data, start, self.delimiter) if state is None else state
        while state == 2 and (read := _read_line(self.stream, self.limit, 2, self.delimiter)) is not None:
            self.number, self.size = self.number + 1, self.size + read[1]
            state = _scan(read[0], 2, self.delimiter) if read[2] is None else read[2]
        return '"\n' if start == 2 else "x\n"

    def take(self) -> tuple[str, int, list[tuple[int, str]]]:
        """The raw text, size and problems of the record read since the last call."""
        taken = self.raw, self.size, self.problems
        self.raw, self.size, self.record_lines, self.problems = "", 0, 0, []
        return taken


def check_columns(
    columns: list[str], filename: str, kind: str, mapping: Mapping[str, Any], *, form: bool = False
) -> None:
    """ImportFormatError when `mapping` names a column the file lacks, or no layout can read records
    with these columns (after `mapping`)."""
    sources = field_sources(mapping)
    heads = {target: path_steps(source)[0] for target, source in sources.items()}
    for target, head in heads.items():
        if head not in columns and sources[target] not in columns:
            shown = ", ".join(columns[:20]) + (", …" if len(columns) > 20 else "")
            raise ImportFormatError(
                f"{filename}: {target} is mapped to {sources[target]}, but the {kind} has no column {head}; "
                f"its columns are [{shown}]"
            )
    names = (set(columns) - set(heads.values()) - set(sources.values())) | set(heads)
    if not any(set(layout.needs) <= names for layout in LAYOUTS):
        reason = no_layout_reason(columns, columns=True, form=form)
        raise ImportFormatError(f"{filename}: the {kind} fits no layout: {reason}")


def sniff_delimiter(header: str, filename: str = "") -> str:
    """The CSV delimiter (comma, semicolon or tab) that splits `header` into the most known field names;
    a `.tsv` file is tab-separated."""
    if filename.lower().removesuffix(".gz").endswith((".tsv", ".tab")):
        return "\t"

    def score(delimiter: str) -> tuple[int, int]:
        cells = _cells(header, delimiter)
        return sum(cell.strip() in KNOWN_KEYS for cell in cells), len(cells)

    return max(DELIMITERS, key=score)


def _csv_delimiter(head: bytes, filename: str) -> str:
    """The delimiter of a CSV file from its first bytes (its header line)."""
    header_line = head.removeprefix(_BOM).split(b"\n", 1)[0]
    return sniff_delimiter(header_line.decode("utf-8", "replace").rstrip("\r"), filename)


def _header_split_elsewhere(columns: list[str]) -> str | None:
    """The character a one-column header seems to be split by, when it is none of DELIMITERS."""
    if len(columns) != 1:
        return None
    for char in _OTHER_SEPARATORS:
        parts = [part.strip() for part in columns[0].split(char)]
        if len(parts) >= 2 and any(part in KNOWN_KEYS for part in parts):
            return char
    return None


def _cells_hint(row: list[str], width: int, delimiter: str) -> str:
    """A hint for a row whose cells do not match the header: the separator the row seems to use."""
    if len(row) != 1:
        return ""
    for other in DELIMITERS:
        if other != delimiter and len(_cells(row[0], other)) == width:
            header, row_by = _DELIMITER_NAMES[delimiter], _DELIMITER_NAMES[other]
            return f" (the header is split by {header}, this row by {row_by})"
    return ""


def _csv_record(
    columns: list[str],
    row: list[str],
    number: int,
    raw: str,
    filename: str,
    options: ImportOptions,
    mapping: Mapping[str, str],
    delimiter: str,
) -> list:
    if len(row) != len(columns):
        reason = f"row has {plural(len(row), 'cell')}; the header has {len(columns)}"
        return [
            RecordError(
                filename, number, None, reason + _cells_hint(row, len(columns), delimiter), raw, "row"
            )
        ]
    sources = field_sources(mapping)
    # An empty cell is an absent field, except in a mapped column (a mapping's target that is blank is
    # absent where the target is optional, and named where it is not) or beside its other side: then it
    # is an empty response.
    mapped = set(sources.values())
    obj = {name: cell for name, cell in zip(columns, row, strict=True) if name and (cell or name in mapped)}
    for pair in (("response_a", "response_b"), ("chosen", "rejected")):
        named = [sources.get(side, side) for side in pair]
        if any(n in obj for n in named):
            obj.update({n: "" for n in named if n in columns and n not in obj})
    return parse_record(
        obj,
        file=filename,
        line=number,
        raw=raw,
        options=options,
        mapping=mapping,
        unit="row",
        text_cells=True,
    )


def _iter_csv(stream: BinaryIO, filename: str, options: ImportOptions, mapping: Mapping[str, str]) -> Reader:
    limit = options.max_record_bytes
    csv.field_size_limit(max(csv.field_size_limit(), limit))
    start = stream.tell()
    delimiter = _csv_delimiter(stream.read(_HEAD_BYTES), filename)
    stream.seek(start)
    lines = _Lines(stream, max(limit, _HEAD_BYTES), delimiter)  # the header may be longer than a record
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise ImportFormatError(f"{filename}: no readable CSV header ({exc or 'the file is empty'})") from exc
    if lines.take()[2]:
        raise ImportFormatError(f"{filename}: the CSV header is not valid UTF-8")
    columns = [name.strip() for name in header]
    if char := _header_split_elsewhere(columns):
        raise ImportFormatError(
            f"{filename}: the CSV header looks split by {char!r}, not by commas, semicolons or tabs; "
            "save the file with one of those separators"
        )
    check_columns(columns, filename, "CSV header", mapping, form=options.form)
    lines.limit, number = limit, 1
    while True:
        first_line = lines.number + 1
        try:
            row: list[str] | csv.Error = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            row = exc
        number += 1
        raw, size, problems = lines.take()
        reasons = [p if n == number == first_line else f"{p} on line {n}" for n, p in problems]
        if size > limit:
            reasons.append(_size_reason(size, limit))
        elif isinstance(row, csv.Error):
            reasons.append(f"malformed CSV: {row}")
        if reasons:
            yield from (RecordError(filename, number, None, reason, raw, "row") for reason in reasons)
        elif any(cell.strip() for cell in row):
            yield from _csv_record(columns, row, number, raw, filename, options, mapping, delimiter)


def _check_parquet(metadata: Any, filename: str, options: ImportOptions) -> None:
    """Refuse, from the footer alone and before any data is read, a Parquet file over the record or
    unpacked-size caps, or with a column chunk that unpacks to more than `parquet_chunk_bytes`: a page
    is decompressed whole, and Arrow holds about four times a value while it reads it, so the largest
    chunk bounds the memory a read takes (one 300 MB string stores in a few KB)."""
    if metadata.num_rows > options.max_records:
        raise _records_error(filename, options.max_records, f"{metadata.num_rows:,} rows")
    total = 0
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            unpacked, stored = chunk.total_uncompressed_size, chunk.total_compressed_size
            total += unpacked
            if unpacked > options.parquet_chunk_bytes:
                raise ImportFormatError(
                    f"{filename}: row group {group + 1}, column {chunk.path_in_schema}: {size_text(stored)} "
                    f"that unpack to {size_text(unpacked)}; a column chunk may unpack to at most "
                    f"{size_text(options.parquet_chunk_bytes)} (PREFSTUDIO_PARQUET_CHUNK_BYTES). Write the "
                    "file with smaller row groups (pyarrow: row_group_size=10_000)."
                )
    if total > options.max_unpacked_bytes:
        raise _unpacked_error(filename, options.max_unpacked_bytes)


def _row_sizes(array: Any) -> Any:
    """Each row's size in bytes as Python text would hold it (texts by their UTF-8 length, other values
    by their width), as a numpy array, computed in Arrow without building any Python object: a value
    a dictionary repeats counts in full in every row that refers to it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = array.type
    if pa.types.is_dictionary(kind):
        sizes = _row_sizes(array.dictionary)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return sizes[indices] if len(sizes) else np.zeros(len(array))
    if pa.types.is_string(kind) or pa.types.is_binary(kind) or pa.types.is_large_string(kind) \
            or pa.types.is_large_binary(kind):  # fmt: skip
        return pc.binary_length(array).fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        inner = _row_sizes(array.flatten())
        parents = pc.list_parent_indices(array).to_numpy(zero_copy_only=False)
        return np.bincount(parents, weights=inner, minlength=len(array)) + 2
    if pa.types.is_struct(kind):
        total = np.zeros(len(array))
        for field in array.flatten():
            total += _row_sizes(field) + 4
        return total
    width = kind.bit_width // 8 if hasattr(kind, "bit_width") and kind.bit_width > 0 else 16
    return np.full(len(array), float(width))


def _batch_rows(batch: Any, start: int, filename: str, options: ImportOptions) -> Iterator[tuple[int, Any]]:
    """(row number, the row as Python values, or a RecordError) for each row of a Parquet record batch.

    Rows are measured in Arrow first (`_row_sizes`): a row over the record limit is never turned into
    Python objects, and the others are, about `options.batch_bytes` at a time. A row with text that is
    not UTF-8 is an error of its own.
    """
    sizes = sum(_row_sizes(column) for column in batch.columns)
    i = 0
    while i < batch.num_rows:
        if sizes[i] > options.max_record_bytes:
            reason = _size_reason(int(sizes[i]), options.max_record_bytes)
            yield start + i, RecordError(filename, start + i, None, reason, "", "row")
            i += 1
            continue
        end, taken = i, 0.0
        while end < batch.num_rows and sizes[end] <= options.max_record_bytes and taken < options.batch_bytes:
            taken += sizes[end]
            end += 1
        part = batch.slice(i, end - i)
        try:
            values: list[Any] = part.to_pylist()
        except UnicodeDecodeError:
            values = []
            for j in range(part.num_rows):
                try:
                    values.extend(part.slice(j, 1).to_pylist())
                except UnicodeDecodeError as exc:
                    reason = f"a text is not valid UTF-8 ({exc.reason} at byte {exc.start})"
                    values.append(RecordError(filename, start + i + j, None, reason, "", "row"))
        for j, value in enumerate(values):
            yield start + i + j, value
        i = end


def _dictionary_columns(metadata: Any) -> list[str]:
    """The text columns (nested ones by their dotted path) the file stores with a dictionary: read as
    dictionaries, a value repeated in many rows is held once, not once per row."""
    found: dict[str, None] = {}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            if chunk.has_dictionary_page and chunk.physical_type == "BYTE_ARRAY":
                found[chunk.path_in_schema] = None
    return list(found)


def _iter_parquet(
    stream: BinaryIO, filename: str, options: ImportOptions, mapping: Mapping[str, str]
) -> Reader:
    import pyarrow
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(stream)
        check_columns(parquet.schema_arrow.names, filename, "Parquet schema", mapping, form=options.form)
        _check_parquet(parquet.metadata, filename, options)
        # Column chunks are read through a 1 MB buffer, not whole (pre_buffer, buffer_size=0 would).
        parquet = pyarrow.parquet.ParquetFile(
            stream,
            pre_buffer=False,
            buffer_size=1 << 20,
            read_dictionary=_dictionary_columns(parquet.metadata),
            metadata=parquet.metadata,
        )
        start, unpacked = 1, 0
        # One iterator per row group: a single iter_batches over the whole file holds on to memory
        # until it ends (measured: 144 -> 395 MB over 400k rows; flat per row group). Batches hold
        # about `batch_bytes` of stored data, going by the row group's mean row size.
        for group in range(parquet.num_row_groups):
            row_group = parquet.metadata.row_group(group)
            mean_row = row_group.total_byte_size / max(1, row_group.num_rows)
            size = max(1, min(options.batch_size, int(options.batch_bytes // max(1.0, mean_row))))
            for batch in parquet.iter_batches(batch_size=size, row_groups=[group], use_threads=False):
                for number, row in _batch_rows(batch, start, filename, options):
                    if isinstance(row, RecordError):
                        yield row
                        continue
                    text = json.dumps(row, ensure_ascii=False, default=str)
                    size_bytes = len(text.encode("utf-8", "surrogatepass"))
                    # What the rows unpack to, dictionaries expanded, counts against the file's cap.
                    unpacked += size_bytes
                    if unpacked > options.max_unpacked_bytes:
                        raise _unpacked_error(filename, options.max_unpacked_bytes)
                    if size_bytes > options.max_record_bytes:
                        reason = _size_reason(size_bytes, options.max_record_bytes)
                        yield RecordError(filename, number, None, reason, text[:RAW_CHARS], "row")
                    else:
                        yield from parse_record(
                            row, file=filename, line=number, raw=text, options=options, mapping=mapping,
                            unit="row",
                        )  # fmt: skip
                start += batch.num_rows
    except (pyarrow.ArrowException, OSError) as exc:
        raise ImportFormatError(f"{filename}: unreadable Parquet file ({exc})") from exc


_READERS = {
    "jsonl": _iter_jsonl,
    "jsonl.gz": _gunzipped(_iter_jsonl),
    "json": _iter_json,
    "json.gz": _gunzipped(_iter_json),
    "csv": _iter_csv,
    "parquet": _iter_parquet,
}


def _pair_completions(items: Reader, options: ImportOptions, filename: str) -> Iterator[Item]:
    """Everything but the completions of unpaired rows as it comes; then, per prompt, pairs of a
    desirable and an undesirable completion (each completion in at least one while the cap allows)."""
    groups: dict[str, list[Completion]] = {}
    held = 0
    for item in items:
        if isinstance(item, Completion):
            key = json.dumps(prompt_key(item.prompt), sort_keys=True, ensure_ascii=False)
            groups.setdefault(key, []).append(item)
            held += len(key) + len(item.text) + len(item.raw)
            if held > options.max_unpaired_bytes:
                raise ImportFormatError(
                    f"{filename}: unpaired (KTO) rows are paired in memory, and this file's come to more "
                    f"than {size_text(options.max_unpaired_bytes)}; split it by prompt and import the parts"
                )
        else:
            yield item
    for group in groups.values():
        yield from _completion_pairs(group, options)


def _completion_pairs(group: list[Completion], options: ImportOptions) -> Iterator[Item]:
    good = [c for c in group if c.desirable]
    bad = [c for c in group if not c.desirable]
    if not good or not bad:
        reason = (
            f"no {'undesirable' if good else 'desirable'} completion for the same prompt in the file: "
            "an unpaired row is paired with one of the opposite label"
        )
        yield from (RecordError(c.file, c.line, "label", reason, c.raw, c.unit) for c in group)
        return
    cover = [(i % len(good), i % len(bad)) for i in range(max(len(good), len(bad)))]
    order = cover + [p for p in itertools.product(range(len(good)), range(len(bad))) if p not in cover]
    order = [(i, j) for i, j in order if response_key(good[i].text) != response_key(bad[j].text)]
    if not order:
        reason = "every desirable completion for this prompt is identical to an undesirable one"
        yield from (RecordError(c.file, c.line, "completion", reason, c.raw, c.unit) for c in group)
        return
    chosen = order[: options.max_pairs_per_record]
    first = group[0]
    for n, (i, j) in enumerate(chosen):
        win, lose = good[i], bad[j]
        digest = content_hash(first.prompt, win.text, lose.text)
        label = "b" if int(digest, 16) & 1 else "a"
        a, b = (lose.text, win.text) if label == "b" else (win.text, lose.text)
        same = win.metadata == lose.metadata
        metadata = win.metadata if same else {"desirable": win.metadata, "undesirable": lose.metadata}
        yield PairRecord(
            line=first.line,
            external_id="|".join(filter(None, (win.external_id, lose.external_id))),
            prompt=first.prompt,
            response_a=a,
            response_b=b,
            model_a="",
            model_b="",
            metadata=metadata,
            gold=None,
            original_label=label,
            shape="preference",
            content_hash=digest,
            layout=first.layout,
            kept=tuple(sorted({*win.kept, *lose.kept})),
            left_out=len(order) - len(chosen) if n == 0 else 0,
            unit=first.unit,
        )


_VALUES_SHOWN = 12  # distinct values kept per field, for the label values of the field mapping
_VALUE_CHARS = 40
_FIELDS_SHOWN = 300


def _walk(value: object, path: str, found: dict[str, list[str]], depth: int) -> None:
    """Note `value`, found at `path`, and what it holds: an object's keys two levels deep (`info.post`),
    the items of a list of objects that are not chat messages by their number (`summaries.0.text`), and
    a few distinct values of each scalar field (as `value_key` writes them)."""
    if len(found) >= _FIELDS_SHOWN and path not in found:
        return
    item = path.rpartition(".")[2].isdigit()
    if isinstance(value, dict):
        if not item:  # an object in a list is offered by its fields
            found.setdefault(path, [])
        if depth < 2 or (depth < 3 and item):
            for key, inner in value.items():
                _walk(inner, f"{path}.{key}", found, depth + 1)
        return
    values = found.setdefault(path, [])
    if isinstance(value, list):
        items = value[:3]
        if depth < 2 and items and all(isinstance(i, dict) and "role" not in i for i in items):
            for i, entry in enumerate(items):
                _walk(entry, f"{path}.{i}", found, depth + 1)
    elif len(values) < _VALUES_SHOWN and not (isinstance(value, str) and len(value) > 4 * _VALUE_CHARS):
        key = value_key(value)
        values.extend([key] if key and len(key) <= _VALUE_CHARS and key not in values else [])


def _first_objects(stream: BinaryIO, filename: str, fmt: str, records: int) -> Iterator[object]:
    """The first `records` records of a file as decoded values, one at a time (CSV: from its first
    256 KB, after a row of the header's names)."""
    if fmt.endswith(".gz"):
        stream, fmt = gzip.GzipFile(fileobj=stream, mode="rb"), fmt.removesuffix(".gz")
    if fmt == "csv":
        data = stream.read(_HEAD_BYTES * 4)
        text = io.StringIO(_decode(data, True)[0], newline="")
        reader = csv.reader(text, delimiter=_csv_delimiter(data, filename))
        header = [cell.strip() for cell in next(reader, [])]
        rows = [dict(zip(header, row, strict=False)) for row in itertools.islice(reader, records + 1)]
        rows = rows[:records] if len(data) < _HEAD_BYTES * 4 else rows[:-1]  # the last may be cut short
        yield from ({k: v for k, v in row.items() if k} for row in [dict.fromkeys(header, ""), *rows])
    elif fmt == "json":
        text = _decode(stream.read(DEFAULT_OPTIONS.max_document_bytes), True)[0]
        yield from _document(text, filename)[:records]
    elif fmt == "parquet":
        yield from _parquet_objects(stream, filename, records)
    else:
        lines = iter(lambda: stream.readline(DEFAULT_OPTIONS.max_record_bytes), b"")
        texts = itertools.islice((_decode(line, True)[0] for line in lines if line.strip()), records)
        yield from (loads(text)[0] for text in texts)


def _parquet_objects(stream: BinaryIO, filename: str, records: int) -> Iterator[object]:
    """A row of the schema's names, then the first rows of a Parquet file read under the importer's
    limits (none when the file is over them or cannot be read)."""
    import pyarrow
    import pyarrow.parquet

    try:
        parquet = pyarrow.parquet.ParquetFile(stream)
        yield {f.name: dict.fromkeys(getattr(f.type, "names", ()), None) for f in parquet.schema_arrow}
        _check_parquet(parquet.metadata, filename, DEFAULT_OPTIONS)
        for batch in itertools.islice(parquet.iter_batches(batch_size=records, use_threads=False), 1):
            rows = _batch_rows(batch, 1, filename, DEFAULT_OPTIONS)
            yield from (row for _, row in rows if not isinstance(row, RecordError))
    except (pyarrow.ArrowException, OSError, ImportFormatError):
        return


def field_values(stream: BinaryIO, *, filename: str, fmt: str, records: int = 50) -> dict[str, list[str]]:
    """The field names of a file's first records, with the paths into them a mapping may name
    (`info.post`, `summaries.0.text`), each with a few of its distinct values (`value_key`), for a field
    mapping and its label values. Records are read one at a time; what was found before a record that
    cannot be read is kept ({} when none can)."""
    found: dict[str, list[str]] = {}
    try:
        for obj in _first_objects(stream, filename, fmt, records):
            for key, value in obj.items() if isinstance(obj, dict) else ():
                _walk(value, str(key), found, 1)
    except (ImportFormatError, OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError):
        pass  # the preview says what is wrong with the file
    return found


def _records_error(filename: str, limit: int, found: str = "") -> ImportFormatError:
    return ImportFormatError(
        f"{filename}: {found or f'more than {limit:,} records'}; the limit per file is {limit:,} records "
        "(PREFSTUDIO_MAX_RECORDS). Split the file and import the parts."
    )


def _counted(items: Reader, filename: str, limit: int) -> Reader:
    """The reader's items, raising ImportFormatError at the first record past `limit`."""
    records, line = 0, None
    for item in items:
        if item.line != line:
            records, line = records + 1, item.line
            if records > limit:
                raise _records_error(filename, limit)
        yield item


def _guarded(items: Iterator[Item], filename: str) -> Iterator[Item]:
    """The items, with any error a reader raises turned into ImportFormatError saying where it
    stopped, so that no import ends without a message; ImportFormatError when there are none."""
    last: Item | None = None
    try:
        for last in items:  # noqa: B007
            yield last
    except ImportFormatError:
        raise
    except Exception as exc:
        where = f" after {last.unit} {last.line}" if last is not None else ""
        raise ImportFormatError(
            f"{filename}: the file could not be read{where} ({type(exc).__name__}: {exc})"
        ) from exc
    if last is None:
        raise ImportFormatError(f"{filename}: the file holds no records")


def iter_records(
    stream: BinaryIO,
    *,
    filename: str,
    fmt: str = "auto",
    options: ImportOptions = DEFAULT_OPTIONS,
    mapping: Mapping[str, str] | None = None,
) -> Iterator[Item]:
    """Pairs and per-record errors of a file, in file order, read as a stream (unpaired rows are
    paired at the end). `mapping` renames fields: importer name -> the file's field (a path into
    objects and lists), and under `label_values` says what each value of the mapped label means.

    An undetectable format raises ImportFormatError at once; other whole-file problems (empty file,
    bad header, corrupt container, a cap of `options` exceeded, any error of a reader) raise it during
    iteration.
    """
    start = stream.tell()
    head = stream.read(_HEAD_BYTES)
    stream.seek(start)
    if fmt == "auto":
        fmt = detect_format(head, filename)
    _check_lfs(head, filename)
    if fmt not in _READERS:
        raise ImportFormatError(f"{filename}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt in ("jsonl", "json", "csv"):
        stream = _Capped(stream, options.max_unpacked_bytes, filename)  # type: ignore[assignment]
    items = _READERS[fmt](stream, filename, options, dict(mapping or {}))
    items = _counted(items, filename, options.max_records)
    return _guarded(_pair_completions(items, options, filename), filename)
