"""The class's exchange (lora_edu.classroom.exchange), the parts that need no second account: what a folder in
inbound/ claims against what the kernel says, and a collection that copies data, never links or FIFOs.
The whole exchange between real accounts runs in tests/deploy/test_class_hub.py."""
from __future__ import annotations

import datetime as dt
import importlib
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
