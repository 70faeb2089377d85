"""The generation tests' models: the lively tiny base as "tiny" and a succeeded run with an adapter."""

from __future__ import annotations

from tests.generation.conftest import tiny_base, tuned_run  # noqa: F401 - fixtures, re-exported
