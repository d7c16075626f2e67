"""The class's exchange (lora_edu.classroom.exchange), the parts that need no second account: what a folder in
inbound/ claims against what the kernel says, and a collection that copies data, never links or FIFOs.
The whole exchange between real accounts runs in tests/deploy/test_class_hub.py."""
from __future__ import annotations

import datetime as dt
import importlib
import json
import logging
import os
import pwd

import pytest

pytest.importorskip("nbgrader")
from lora_edu.classroom import EXCHANGE_FACTORY, exchange  # noqa: E402

ME = pwd.getpwuid(os.getuid()).pw_name


def test_factory_names_a_subclass_of_nbgraders_own_for_each_step():
    from nbgrader.exchange import ExchangeFactory

    defaults = ExchangeFactory()
    for trait, dotted in EXCHANGE_FACTORY.items():
        module, _, name = dotted.rpartition(".")
        assert issubclass(getattr(importlib.import_module(module), name), getattr(defaults, trait)), trait


def test_a_folder_is_dated_by_the_later_of_its_claim_and_the_kernels_clock(tmp_path):
    (tmp_path / f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+abc").mkdir()
    record = exchange.folder_record(str(tmp_path), f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+abc")
    assert record["owner"] == ME and record["claimed"] == dt.datetime(2000, 1, 1)
    assert record["timestamp"] == record["changed"] > dt.datetime(2020, 1, 1)   # a claim in the past changes nothing


@pytest.mark.parametrize("name", ["x+lora+", "x+lora+not a time+r", "plainname", "x+lora+2000-01-01 00:00:00 UTC+link"])
def test_odd_names_and_links_are_unusable_not_fatal(tmp_path, name):
    if name.endswith("link"):
        os.symlink(tmp_path, tmp_path / name)
    else:
        (tmp_path / name).mkdir()
    assert exchange.folder_record(str(tmp_path), name) is None


def test_collection_copies_files_and_folders_keeps_links_as_links_and_leaves_out_fifos(tmp_path, caplog):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "a.ipynb").write_text("{}")
    (src / "sub" / "b.txt").write_text("b")
    secret = tmp_path / "instructor_source.ipynb"
    secret.write_text("SOLUTIONS")
    os.symlink(secret, src / "link.ipynb")
    os.mkfifo(src / "pipe.ipynb")
    with caplog.at_level(logging.WARNING):
        exchange._safe_copytree(str(src), str(tmp_path / "out"), logging.getLogger("t"))
    out = tmp_path / "out"
    assert (out / "a.ipynb").read_text() == "{}" and (out / "sub" / "b.txt").read_text() == "b"
    assert os.path.islink(out / "link.ipynb")   # the grader refuses it with a reason; its target was never read
    assert not (out / "pipe.ipynb").exists() and "pipe.ipynb" in caplog.text


# -- the independent red team (docs/reviews/hub_red_team_independent.md): one student's folder never stops or harms collect --


def _collect(tmp_path, max_dir_kb=100):
    from nbgrader.auth import Authenticator
    from nbgrader.coursedir import CourseDirectory

    coursedir = CourseDirectory(root=str(tmp_path / "course"), max_dir_size=max_dir_kb)
    collect = exchange.Collect(coursedir=coursedir, authenticator=Authenticator())
    collect.inbound_path, collect.duedate = str(tmp_path / "inbound"), None
    return collect


def test_a_link_named_like_collects_record_is_left_out_and_the_record_never_written_through_it(tmp_path):
    victim = tmp_path / "gradebook.db"
    victim.write_text("THE INSTRUCTOR'S GRADEBOOK")
    name = f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+x"
    src = tmp_path / "inbound" / name
    src.mkdir(parents=True)
    (src / "a.ipynb").write_text("{}")
    os.symlink(victim, src / exchange.COLLECTED_FILE)
    dest = tmp_path / "course" / "submitted" / ME / "lora"
    dest.parent.mkdir(parents=True)
    _collect(tmp_path).do_copy(str(src), str(dest))
    assert victim.read_text() == "THE INSTRUCTOR'S GRADEBOOK"
    record = dest / exchange.COLLECTED_FILE
    assert not record.is_symlink() and json.loads(record.read_text())["student"] == ME


@pytest.mark.parametrize("attack", ["sparse", "deep", "many"])
def test_a_folder_too_big_too_deep_or_too_full_is_refused_with_a_reason_and_nothing_kept(tmp_path, caplog, attack, monkeypatch):
    name = f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+x"
    src = tmp_path / "inbound" / name
    src.mkdir(parents=True)
    if attack == "sparse":   # no room in inbound/, 200 kB once copied: over a 100 kB limit
        with open(src / "big.ipynb", "wb") as f:
            f.truncate(200_000)
        reason = "more than 100000 bytes"
    elif attack == "deep":
        os.makedirs(src / os.path.join(*["d"] * (exchange.MAX_DEPTH + 2)))
        reason = "nested deeper"
    else:
        monkeypatch.setattr(exchange, "MAX_ENTRIES", 5)
        for i in range(6):
            (src / f"{i}.txt").write_text("x")
        reason = "more than 5 files"
    collect = _collect(tmp_path)
    assert reason in collect._unusable(str(src))
    dest = tmp_path / "course" / "submitted" / ME / "lora"
    dest.parent.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        collect.do_copy(str(src), str(dest))   # changed after the check: refused here too, nothing half-copied stays
    assert not dest.exists() and f"Refused {name}: it" in caplog.text and reason in caplog.text


def test_an_unreadable_entry_refuses_that_folder_not_the_collection(tmp_path, monkeypatch, caplog):
    name = f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+x"
    src = tmp_path / "inbound" / name
    src.mkdir(parents=True)
    (src / "a.ipynb").write_text("{}")
    real_open = os.open

    def denied(path, *args, **kw):   # what the instructor meets in a file the student made 0600 (root is never refused)
        if str(path).endswith("a.ipynb"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kw)
    monkeypatch.setattr(exchange.os, "open", denied)
    collect = _collect(tmp_path)
    assert "Permission denied" in collect._unusable(str(src))
    dest = tmp_path / "course" / "submitted" / ME / "lora"
    dest.parent.mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        collect.do_copy(str(src), str(dest))
    assert not dest.exists() and "Permission denied" in caplog.text


@pytest.mark.parametrize("planted", ["garbage", "link"])
def test_the_students_timestamp_file_is_replaced_by_the_time_that_counts(tmp_path, planted):
    """nbgrader reads timestamp.txt of a collected folder at every later collect, as the instructor: text that is no
    time stopped the class's collection ("Invalid timestamp string"), a link to /dev/zero made it read forever."""
    from nbgrader.utils import parse_utc

    name = f"{ME}+lora+2000-01-01 00:00:00.000000 UTC+x"
    src = tmp_path / "inbound" / name
    src.mkdir(parents=True)
    if planted == "garbage":
        (src / "timestamp.txt").write_text("not a time")
    else:
        os.symlink("/dev/zero", src / "timestamp.txt")
    os.symlink("/dev/zero", src / "submission_secret.txt")
    dest = tmp_path / "course" / "submitted" / ME / "lora"
    dest.parent.mkdir(parents=True)
    collect = _collect(tmp_path)
    collect.do_copy(str(src), str(dest))
    stamp = dest / "timestamp.txt"
    assert not stamp.is_symlink() and not (dest / "submission_secret.txt").exists()
    assert parse_utc(stamp.read_text()).replace(tzinfo=None) == exchange.folder_record(str(src.parent), name)["timestamp"]
    assert collect.coursedir.get_existing_timestamp(str(dest)) is not None
