"""Call a learner's function under CPU and wall-clock limits; report what happened as plain data.

Why this exists: the notebook's ``ex.check`` and the course's grader (``python -m lora_edu.grade``)
must judge an answer the same way, but the grader runs student code in a sandboxed process and
may only let plain data (numbers, lists, strings) come back from it. So both go through this one
module: :func:`call` runs the function and returns an *outcome* dict, :func:`encode` turns the
answer into plain data, and :func:`decode` turns it back into a NumPy array with exact type
checks, treating it as hostile: a forged object cannot pass for a number.

Standalone on purpose (standard library and NumPy; torch only if the caller already imported it):
the grader copies this file into its sandbox, where the course package, and with it the reference
answers, is not importable.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import signal
import sys
import threading
import time
import warnings
from typing import Any

import numpy as np

# What the learner's function did (the "status" of an outcome).
RETURNED, RAISED, STUB, CPU_LIMIT, WALL_LIMIT = "returned", "raised", "stub", "cpu limit", "wall limit"
STATUSES = (RETURNED, RAISED, STUB, CPU_LIMIT, WALL_LIMIT)

#: the most numbers an answer may hold (the course's answers hold at most a few hundred)
MAX_ENTRIES = 1_000_000
#: dtypes an answer may come back with: NumPy names, and torch's for tensors
_FLOATS = {"float16": np.float16, "float32": np.float32, "float64": np.float64,
           "torch.float16": np.float16, "torch.bfloat16": np.float32, "torch.float32": np.float32, "torch.float64": np.float64}
_INTS = {name: getattr(np, name) for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}
_INTS |= {f"torch.{name}": getattr(np, name) for name in ("int8", "int16", "int32", "int64", "uint8")}
_BOOLS = {"bool": np.bool_, "torch.bool": np.bool_}
DTYPES = _FLOATS | _INTS | _BOOLS

#: answers that are not numbers, described in the course's own words (the grader's plain feedback may say these,
#: and only these: any other description is the student's text)
CANNED = {
    "meta": "a meta tensor (it has a shape but no values: compute it on a real device, such as the CPU)",
    "sparse": "a sparse tensor (return a dense one: .to_dense())",
    "unreadable": "a value whose numbers could not be read (converting it to numbers raised an error)",
    "too many": f"an answer with more than {MAX_ENTRIES:,} numbers (too many)",
    "too large": "an answer too large to send back to the grader (keep answers to a few thousand numbers)",
}


class _OutOfCpu(BaseException):
    """Raised inside the learner's function at its CPU-time limit (a BaseException: ``except Exception`` cannot swallow it)."""


class _OutOfWall(BaseException):
    """Raised inside the learner's function at its wall-clock limit."""


def _torch():
    """torch if something already imported it; never imported here (it takes a second or two)."""
    return sys.modules.get("torch")


def _is_tensor(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


@contextlib.contextmanager
def _limits(cpu_seconds: float, wall_seconds: float):
    """Interrupt Python code past ``cpu_seconds`` of CPU time (SIGPROF) or ``wall_seconds`` (SIGALRM).

    CPU time, not wall time, is the limit an answer is judged by: a correct answer must not fail
    because the machine is busy. The wall-clock limit is a generous backstop for code that waits.
    Signals work only on the main thread on Unix; elsewhere :func:`call` checks the CPU time afterwards.
    """
    if not (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()):
        yield
        return

    def on_cpu(signum, frame):
        raise _OutOfCpu()

    def on_wall(signum, frame):
        raise _OutOfWall()

    old_prof, old_alarm = signal.signal(signal.SIGPROF, on_cpu), signal.signal(signal.SIGALRM, on_wall)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)
    signal.setitimer(signal.ITIMER_REAL, wall_seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGPROF, old_prof)
        signal.signal(signal.SIGALRM, old_alarm)


def _copy(value: Any) -> Any:
    return value.detach().clone() if _is_tensor(value) else copy.deepcopy(value)


def _unchanged(before: Any, after: Any) -> bool:
    if _is_tensor(before) or isinstance(before, np.ndarray):
        a = before.detach().cpu().numpy() if _is_tensor(before) else before
        b = after.detach().cpu().numpy() if _is_tensor(after) else np.asarray(after)
        return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
    try:
        return bool(before == after)
    except Exception:  # objects without a usable ==: nothing to compare
        return True


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def call(fn: Any, inputs: dict, *, cpu_seconds: float, wall_seconds: float, encoder: Any = None) -> dict:
    """Run ``fn(**copies of inputs)`` and return its outcome as plain data.

    The outcome has ``status`` (one of :data:`STATUSES`), ``answer`` (:func:`encode` of the return
    value, or None), ``error`` (for a raised exception), ``changed`` (inputs modified in place),
    ``notes`` (warnings and anything printed to stderr, which never cost marks) and ``cpu_seconds``.
    ``encoder`` replaces :func:`encode` for the return value: :func:`encode_record` for a probe's record.
    """
    args = {name: _copy(value) for name, value in inputs.items()}
    before = {name: _copy(value) for name, value in inputs.items()}
    outcome = {"status": RETURNED, "answer": None, "error": "", "changed": [], "notes": [], "cpu_seconds": 0.0}
    answer = None
    stderr = io.StringIO()
    start = time.process_time()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        try:
            with _limits(cpu_seconds, wall_seconds):
                value = fn(**args)
                try:  # within the limits (a repr or __array__ of the student's runs here), but not the function's error
                    answer = (encoder or encode)(value)
                except Exception:  # a tensor of a kind nobody expected: say so, never "no function was defined"
                    answer = _other("unreadable")
        except NotImplementedError:
            outcome["status"] = STUB
        except _OutOfCpu:
            outcome["status"] = CPU_LIMIT
        except _OutOfWall:
            outcome["status"] = WALL_LIMIT
        except (Exception, SystemExit) as exc:
            outcome.update(status=RAISED, error=_short(f"{type(exc).__name__}: {exc}"))
        else:
            outcome["answer"] = answer
    outcome["cpu_seconds"] = round(time.process_time() - start, 4)
    if outcome["status"] == RETURNED and outcome["cpu_seconds"] > cpu_seconds:  # no signal off the main thread
        outcome.update(status=CPU_LIMIT, answer=None)
    outcome["changed"] = [name for name in args if not _unchanged(before[name], args[name])]
    outcome["notes"] = [_short(f"{w.category.__name__}: {w.message}") for w in caught[:3]]
    if stderr.getvalue().strip():
        outcome["notes"].append(_short(f"printed to stderr: {stderr.getvalue().strip()}"))
    return outcome


def encode(value: Any) -> dict:
    """A value as plain data: ``{"kind": "none"}``, an ``"array"`` (dtype, shape, flat data, origin) or ``"other"``.

    Numbers, NumPy arrays and scalars, lists and tuples of numbers and real ``torch.Tensor``s
    become arrays; anything else is described in a few words and never converted, so an object
    that only pretends to be a tensor stays "other".
    """
    if value is None:
        return {"kind": "none"}
    if _is_tensor(value):
        if value.is_meta:
            return _other("meta")
        if value.layout != _torch().strided:
            return _other("sparse")
        if value.numel() > MAX_ENTRIES:
            return _other("too many")
        try:
            tensor = value.detach().cpu()
            data = tensor.double() if tensor.is_floating_point() else tensor
        except Exception:
            return _other("unreadable")
        return {"kind": "array", "dtype": str(tensor.dtype), "shape": list(tensor.shape),
                "data": data.reshape(-1).tolist(), "origin": "torch.Tensor"}
    origin = type(value).__name__
    if isinstance(value, (np.ndarray, np.number, np.bool_, int, float, list, tuple)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # ragged lists: an error, not an object array
                array = np.asarray(value)
        except Exception:
            array = None
        if array is not None and array.dtype.name in DTYPES:
            if array.size > MAX_ENTRIES:
                return _other("too many")
            return {"kind": "array", "dtype": array.dtype.name, "shape": list(array.shape),
                    "data": array.reshape(-1).tolist(), "origin": "numpy array" if isinstance(value, np.ndarray) else origin}
    return {"kind": "other", "description": _short(f"{origin} {value!r}", 80)}


def _other(why: str) -> dict:
    """An answer that is not numbers, in the course's words (:data:`CANNED`)."""
    return {"kind": "other", "description": CANNED[why]}


#: the most fields a record may have, and the longest field name
MAX_FIELDS, MAX_FIELD_NAME = 64, 40


def encode_record(value: Any) -> dict:
    """A probe's record (a dict of names to values) as plain data: ``{"kind": "record", "fields": {name: encode(value)}}``.

    Anything that is not such a dict (at most :data:`MAX_FIELDS` str keys) is :func:`encode`'d as it is,
    so the judge can say what came back instead. All fields together hold at most :data:`MAX_ENTRIES` numbers.
    """
    if not (type(value) is dict and len(value) <= MAX_FIELDS
            and all(type(k) is str and len(k) <= MAX_FIELD_NAME for k in value)):
        return encode(value)
    fields = {name: encode(field) for name, field in value.items()}
    if sum(len(f.get("data", ())) for f in fields.values()) > MAX_ENTRIES:
        return _other("too many")
    return {"kind": "record", "fields": fields}


def decode_record(plain: Any) -> dict:
    """The fields of an :func:`encode_record` dict, each decoded by :func:`decode` (an array, None or a description).

    Checks the types exactly and raises ``ValueError`` naming the first problem; an answer that is not a
    record raises too, saying what it is.
    """
    _exact(plain, dict, "an answer")
    if plain.get("kind") != "record" or set(plain) != {"kind", "fields"}:
        got = decode(plain)
        raise ValueError(f"expected a record of named values, got {'None' if got is None else got if isinstance(got, str) else 'an array'}")
    fields = _exact(plain["fields"], dict, "fields")
    if len(fields) > MAX_FIELDS or not all(type(k) is str and len(k) <= MAX_FIELD_NAME for k in fields):
        raise ValueError(f"a record has at most {MAX_FIELDS} fields with names of at most {MAX_FIELD_NAME} characters")
    return {name: decode(field) for name, field in fields.items()}


def _exact(value: Any, kind: type, what: str):
    if type(value) is not kind:
        raise ValueError(f"{what} must be {kind.__name__}, not {type(value).__name__}")
    return value


def decode(plain: Any) -> np.ndarray | None | str:
    """The answer an :func:`encode` dict stands for: a NumPy array, None, or a description (str).

    Checks every type exactly (a dict with exactly the expected keys, a list of int or float, a
    known dtype, entries matching the shape) and raises ``ValueError`` naming the first problem.
    Used on every answer, in the notebook and in the grader alike.
    """
    _exact(plain, dict, "an answer")
    kind = plain.get("kind")
    if kind == "none" and set(plain) == {"kind"}:
        return None
    if kind == "other" and set(plain) == {"kind", "description"}:
        return _short(_exact(plain["description"], str, "a description"), 200)
    if kind != "array" or set(plain) != {"kind", "dtype", "shape", "data", "origin"}:
        raise ValueError(f"unrecognised answer record with keys {sorted(map(str, plain))[:6]}")
    dtype = DTYPES.get(_exact(plain["dtype"], str, "dtype"))
    if dtype is None:
        raise ValueError(f"unsupported dtype {plain['dtype'][:40]!r}")
    shape = _exact(plain["shape"], list, "shape")
    if len(shape) > 8 or any(type(n) is not int or n < 0 for n in shape):
        raise ValueError("shape must be a list of at most 8 non-negative ints")
    data = _exact(plain["data"], list, "data")
    _exact(plain["origin"], str, "origin")
    if len(data) != math.prod(shape) or len(data) > MAX_ENTRIES:
        raise ValueError(f"{len(data)} entries do not fill the shape {shape}")
    allowed = (bool,) if dtype is np.bool_ else (int, float, bool) if dtype in _FLOATS.values() else (int, bool)
    if not all(type(v) in allowed for v in data):
        raise ValueError(f"entries of a {plain['dtype']} answer must be {' or '.join(t.__name__ for t in allowed)}")
    try:
        return np.array(data, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise ValueError(f"an entry does not fit {plain['dtype']}: {exc}") from None


def check_outcome(outcome: Any) -> dict:
    """``outcome`` if it is a well-formed :func:`call` outcome (exact types), else ``ValueError``.

    Its texts come back shortened (at most 300 characters, whitespace collapsed; at most 10 names and
    notes): they end up in feedback files, and a forged outcome could be megabytes of newlines.
    """
    keys = {"status", "answer", "error", "changed", "notes", "cpu_seconds"}
    if type(outcome) is not dict or set(outcome) != keys:
        raise ValueError("the record of the call is not an outcome")
    if outcome["status"] not in STATUSES or type(outcome["status"]) is not str:
        raise ValueError("unknown status")
    _exact(outcome["error"], str, "error")
    for name in ("changed", "notes"):
        if not all(type(v) is str for v in _exact(outcome[name], list, name)):
            raise ValueError(f"{name} must be a list of str")
    if type(outcome["cpu_seconds"]) not in (int, float):
        raise ValueError("cpu_seconds must be a number")
    if outcome["answer"] is not None:
        _exact(outcome["answer"], dict, "answer")
    return outcome | {"error": _short(outcome["error"]), "changed": [_short(c, 60) for c in outcome["changed"][:10]],
                      "notes": [_short(n) for n in outcome["notes"][:10]]}
