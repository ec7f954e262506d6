"""On two workers (``pytest -n 2 --dist loadfile --no-loadscope-reorder``, pytest-xdist) each module runs whole on one
worker, the modules with the most ``slow`` tests handed out first: conftest.py sorts them so on every worker, and
``--no-loadscope-reorder`` keeps that order."""

from pathlib import Path
from types import SimpleNamespace

import conftest

ROOT = Path(__file__).resolve().parents[1]


def item(module: str, name: str, slow: bool = False) -> SimpleNamespace:
    """What the ordering reads of a collected test: its module's path and its marks."""
    marks = {"slow"} if slow else set()
    return SimpleNamespace(path=ROOT / module, name=f"{module}::{name}", get_closest_marker=lambda mark: mark in marks or None)


COLLECTED = [item("a.py", "t1"), item("a.py", "t2", slow=True), item("b.py", "t1"), item("c.py", "t1", slow=True),
             item("c.py", "t2", slow=True), item("c.py", "t3"), item("d.py", "t1")]  # fmt: skip


def test_a_worker_takes_the_modules_with_the_most_slow_tests_first_each_whole_and_in_its_order(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    items = list(COLLECTED)
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.name for i in items] == ["c.py::t1", "c.py::t2", "c.py::t3", "a.py::t1", "a.py::t2", "b.py::t1", "d.py::t1"]


def test_one_process_keeps_the_collected_order(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    items = list(COLLECTED)
    conftest.pytest_collection_modifyitems(None, items)
    assert items == COLLECTED
