"""``kubetune.files``: the one way outputs are replaced: whole or not at all."""

import pytest

from kubetune.files import replaced, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "out" / "report.json"
    write_text_atomic(path, "old")
    with pytest.raises(RuntimeError), replaced(path) as partial:
        partial.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in path.parent.iterdir()) == ["report.json"]
    write_text_atomic(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_a_suffix_ends_the_partials_name_and_the_file_lands_whole(tmp_path):
    path = tmp_path / "pipeline.yaml"
    with replaced(path, suffix=".yaml") as partial:
        assert partial.parent == tmp_path and partial.name.endswith(".yaml") and partial.name.startswith(".pipeline.yaml.part-")
        partial.write_text("whole")
    assert path.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["pipeline.yaml"]
