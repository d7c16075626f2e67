"""Plain data across the sandbox's wall: what encodes, and what the strict decoder refuses."""
import math

import numpy as np
import pytest
import torch

from lora_edu.course.answer_calls import RETURNED, STUB, call, check_outcome, decode, encode


@pytest.mark.parametrize("value", [3, 2.5, np.float32(1.5), np.arange(6).reshape(2, 3), [1.0, 2.0], (1, 2),
                                   torch.ones(2, 2), torch.arange(4), np.array(True)])
def test_numbers_arrays_and_tensors_round_trip(value):
    plain = encode(value)
    got = decode(plain)
    expected = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    assert got.shape == expected.shape and np.array_equal(got, expected)
    assert np.issubdtype(got.dtype, np.floating) == np.issubdtype(expected.dtype, np.floating)


def test_bfloat16_tensors_decode_as_floats():
    assert decode(encode(torch.ones(2, dtype=torch.bfloat16))).dtype == np.float32


@pytest.mark.parametrize("value,words", [("text", "str 'text'"), ({"a": 1}, "dict"), ([[1, 2], [3]], "list"),
                                         (np.array(["a"]), "ndarray"), (1 + 2j, "complex")])
def test_other_values_are_described_never_converted(value, words):
    plain = encode(value)
    assert plain["kind"] == "other" and words in decode(plain)


@pytest.mark.parametrize("plain,words", [
    ([1.0], "must be dict"),
    ({"kind": "array", "dtype": "object", "shape": [1], "data": [1], "origin": "x"}, "unsupported dtype"),
    ({"kind": "array", "dtype": "float64", "shape": [2], "data": [1.0], "origin": "x"}, "do not fill"),
    ({"kind": "array", "dtype": "float64", "shape": [1], "data": ["1.0"], "origin": "x"}, "must be int or float"),
    ({"kind": "array", "dtype": "int64", "shape": [1], "data": [1.5], "origin": "x"}, "must be int"),
    ({"kind": "array", "dtype": "int64", "shape": [1], "data": [2 ** 80], "origin": "x"}, "does not fit"),
    ({"kind": "array", "dtype": "float64", "shape": [True], "data": [1.0], "origin": "x"}, "non-negative ints"),
    ({"kind": "array", "dtype": "float64", "shape": [1], "data": [1.0], "origin": "x", "passed": True}, "unrecognised"),
    ({"kind": "none", "score": 1.0}, "unrecognised"),
])
def test_the_decoder_refuses_anything_but_exact_plain_data(plain, words):
    with pytest.raises(ValueError, match=words):
        decode(plain)


def test_nan_survives_to_be_reported():
    assert math.isnan(decode(encode(float("nan"))).item())


def test_call_records_what_happened():
    def stub(x):
        raise NotImplementedError

    assert call(lambda x: x + 1, {"x": 1}, cpu_seconds=1, wall_seconds=5)["status"] == RETURNED
    assert call(stub, {"x": 1}, cpu_seconds=1, wall_seconds=5)["status"] == STUB
    outcome = call(lambda x: x.__setitem__(0, 5), {"x": np.zeros(2)}, cpu_seconds=1, wall_seconds=5)
    assert outcome["changed"] == ["x"] and check_outcome(outcome) == outcome


def test_an_exit_inside_the_function_is_an_exception_not_the_end_of_the_check():
    outcome = call(lambda: exit(0), {}, cpu_seconds=1, wall_seconds=5)
    assert outcome["status"] == "raised" and "SystemExit" in outcome["error"]


@pytest.mark.parametrize("bad", [None, [], {"status": "returned"}, dict.fromkeys(["status", "answer", "error", "changed", "notes", "cpu_seconds"])])
def test_check_outcome_refuses_malformed_records(bad):
    with pytest.raises(ValueError):
        check_outcome(bad)


def test_check_outcome_shortens_what_would_go_into_feedback_files():
    forged = dict(status="raised", answer=None, error="X: " + "line\r\n=1+1\n" * 10000, changed=["a"] * 100,
                  notes=["n" * 10000], cpu_seconds=0.0)
    clean = check_outcome(forged)
    assert len(clean["error"]) <= 300 and "\n" not in clean["error"]
    assert len(clean["changed"]) == 10 and len(clean["notes"][0]) <= 300


def test_a_probes_record_round_trips_field_by_field_and_a_plain_decoder_refuses_it():
    from lora_edu.course.answer_calls import decode_record, encode_record

    plain = encode_record({"y": torch.ones(2, 3), "losses": [1.0, 0.5], "scaling": 2.0, "grad": None})
    got = decode_record(plain)
    assert got["y"].shape == (2, 3) and got["losses"].tolist() == [1.0, 0.5] and got["scaling"] == 2.0 and got["grad"] is None
    with pytest.raises(ValueError, match="unrecognised"):
        decode(plain)   # a record is never read as one number or array


@pytest.mark.parametrize("plain,words", [
    ({"kind": "record", "fields": [1]}, "fields must be dict"),
    ({"kind": "record", "fields": {"x" * 41: {"kind": "none"}}}, "names of at most 40"),
    ({"kind": "record", "fields": {"y": {"kind": "array", "dtype": "object", "shape": [1], "data": [1], "origin": "x"}}}, "unsupported dtype"),
    ({"kind": "record", "fields": {}, "passed": True}, "unrecognised"),
    ({"kind": "array", "dtype": "float64", "shape": [1], "data": [1.0], "origin": "x"}, "expected a record"),
])
def test_a_forged_record_is_refused_with_the_reason(plain, words):
    from lora_edu.course.answer_calls import decode_record

    with pytest.raises(ValueError, match=words):
        decode_record(plain)


def test_a_value_that_is_not_a_record_is_encoded_as_it_is():
    from lora_edu.course.answer_calls import encode_record

    assert encode_record(3.0)["kind"] == "array" and encode_record({1: 2})["kind"] == "other"
    assert encode_record({f"f{i}": 1 for i in range(65)})["kind"] == "other"
