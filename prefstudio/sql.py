"""Written-out SQL for the queries every request runs: statements, parameters and model rows.

An annotator's judge request runs about fifteen statements; built through the ORM each one cost 1 to 3 ms
of Python on these machines, written out it costs a fifth of that. Callers keep their statements
portable between PostgreSQL and SQLite and add PostgreSQL-only clauses (row locks) themselves. Values go
through the fields' own conversions both ways, so JSON, booleans and aware datetimes behave as in the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import connection
from django.db.models import Model


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def columns(model: type[Model], names: Iterable[str], alias: str = "") -> str:
    """`alias.column, ...` for these field names (attnames such as `pair_id` work too)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + _field(model, name).column for name in names)


def fetchone(sql: str, params: Sequence[Any] = ()) -> tuple | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def fetchall(sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def execute(sql: str, params: Sequence[Any] = ()) -> int:
    """Run a statement; the number of rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def param(model: type[Model], name: str, value: Any) -> Any:
    """`value` prepared for the database as the field `name` stores it."""
    return _field(model, name).get_db_prep_save(value, connection)


def load(model: type[Model], names: Sequence[str], values: Sequence[Any]) -> Model:
    """A model instance from selected values, converted as the ORM would (fields not named are deferred)."""
    converted = []
    for value, converters in zip(values, _converters(model, tuple(names), connection.vendor), strict=True):
        for convert, expression in converters:
            value = convert(value, expression, connection)
        converted.append(value)
    return model.from_db(connection.alias, [_field(model, n).attname for n in names], converted)


def insert_statement(
    model: type[Model], values: dict[str, Any], *, on_conflict: Sequence[str] = ()
) -> tuple[str, list[Any]]:
    """`INSERT` of one row of `values` (skipped when `on_conflict` columns match a row); its parameters."""
    names = tuple(values)
    return _insert_sql(model, names, tuple(on_conflict)), [param(model, n, values[n]) for n in names]


@cache
def _insert_sql(model: type[Model], names: tuple[str, ...], on_conflict: tuple[str, ...]) -> str:
    statement = (
        f"INSERT INTO {model._meta.db_table} ({columns(model, names)}) "
        f"VALUES ({', '.join(['%s'] * len(names))})"
    )
    if on_conflict:
        statement += f" ON CONFLICT ({columns(model, on_conflict)}) DO NOTHING"
    return statement


def insert(
    model: type[Model],
    values: dict[str, Any],
    *,
    on_conflict: Sequence[str] = (),
    returning: str = "id",
    with_: tuple[str, Sequence[Any]] = ("", ()),
) -> Any:
    """INSERT one row; the `returning` column's value, or None when `on_conflict` columns matched a row.

    `with_`: a `WITH ... ` clause and its parameters to run in the same statement (PostgreSQL).
    """
    statement, params = insert_statement(model, values, on_conflict=on_conflict)
    prefix, prefix_params = with_
    row = fetchone(f"{prefix}{statement} RETURNING {returning}", [*prefix_params, *params])
    return row[0] if row else None


def insert_columns(model: type[Model]) -> list[str]:
    """The columns (attnames) an INSERT of a new `model` row sets: every concrete field but the key."""
    return [f.attname for f in model._meta.concrete_fields if not f.primary_key]


def new_values(instance: Model) -> dict[str, Any]:
    """What an INSERT of `instance` as a new row sets: `insert_columns` and their values."""
    return {name: getattr(instance, name) for name in insert_columns(type(instance))}


def add(
    instance: Model, *, on_conflict: Sequence[str] = (), with_: tuple[str, Sequence[Any]] = ("", ())
) -> bool:
    """INSERT a new instance (as `insert`), setting its key; False when `on_conflict` matched a row."""
    instance.pk = insert(type(instance), new_values(instance), on_conflict=on_conflict, with_=with_)
    instance._state.adding = instance.pk is None
    return instance.pk is not None


@dataclass
class Rider:
    """Statements that travel inside the next statement a transaction sends, saving their round trip
    (PostgreSQL, whose WITH clauses may write): `ctes`, a WITH list, and its parameters; the carrier
    also selects `select`, expressions over those CTEs. `row` holds their values once sent."""

    ctes: str
    params: list[Any]
    select: list[str]
    row: tuple | None = None

    def carried_by(self, ctes: str, params: Sequence[Any], select: str, source: str) -> tuple[str, list[Any]]:
        """A carrier statement: its own `ctes` after ours, selecting ours then its `select` from its
        `source`, LEFT JOINed so that our values come back even when the source has no row."""
        statement = (
            f"WITH {self.ctes}, {ctes} SELECT {', '.join(self.select)}, {select} "
            f"FROM (SELECT 1) AS one LEFT JOIN ({source}) ON true"
        )
        return statement, [*self.params, *params]

    def take(self, row: tuple) -> tuple:
        """Keep our values from a carrier's `row`; the carrier's own values."""
        self.row = row[: len(self.select)]
        return row[len(self.select) :]

    def send(self) -> tuple:
        """Our values, sending the statements alone if no carrier took them."""
        if self.row is None:
            self.row = fetchone(f"WITH {self.ctes} SELECT {', '.join(self.select)}", self.params)
        return self.row


@cache
def _field(model: type[Model], name: str) -> Any:
    return model._meta.get_field(name)  # names and attnames (`pair_id`) alike


@cache
def _converters(model: type[Model], names: tuple[str, ...], vendor: str) -> list[list[tuple[Any, Any]]]:
    out = []
    for name in names:
        field = _field(model, name)
        expression = field.get_col(model._meta.db_table)
        found = connection.ops.get_db_converters(expression) + field.get_db_converters(connection)
        out.append([(convert, expression) for convert in found])
    return out
