"""``--seed-file``: re-use a run's seed without showing it in the process list (ps, /proc/<pid>/cmdline), which every
account on a class's server can read (the independent red team of the class hub, docs/reviews/hub_red_team_independent.md)."""
from __future__ import annotations

import pytest

from lora_edu.grade import __main__ as cli


@pytest.mark.parametrize("text", ['{"seed": 1234, "assignment": "lora"}', "1234\n"])
def test_the_seed_is_read_from_a_run_record_or_a_bare_number(tmp_path, text):
    (tmp_path / "s").write_text(text)
    assert cli.read_seed(tmp_path / "s") == 1234


@pytest.mark.parametrize("text", ['{"assignment": "lora"}', "true", "12.5", "not a seed", ""])
def test_a_file_without_a_seed_is_refused_with_what_it_should_hold(tmp_path, text):
    (tmp_path / "s").write_text(text)
    with pytest.raises(ValueError, match="no seed in it"):
        cli.read_seed(tmp_path / "s")


def test_the_command_line_refuses_both_and_a_missing_file_before_grading(tmp_path, capsys):
    (tmp_path / "s").write_text("7")
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "lora", "--seed", "7", "--seed-file", str(tmp_path / "s")])
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "lora", "--seed-file", str(tmp_path / "missing")])
    assert "cannot read it" in capsys.readouterr().err
