"""Hooks of the fault tests: a failed test prints the tail of each service's log."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, Any]:
    # Keeps each phase's report on the test item, for the fixture that prints the service logs.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
