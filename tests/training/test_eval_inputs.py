"""Issue 16 (8): malformed data and prediction files end in one line naming the file, the entry and the reason.

``hts eval`` reads both through :mod:`hts.training.data`; every case here is an
:class:`HtsError` (``hts: error: ...``, exit status 2), never a traceback, and
pickled (object) arrays are refused without being unpickled.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hts.cli import main
from hts.errors import HtsError
from hts.training.data import load_labels_npz, load_npz, save_labels_npz


def _sample(i: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.full((32, 32), 10 + i, np.uint8)
    labels = np.zeros((32, 32), np.uint16)
    image[4:12, 4:12], labels[4:12, 4:12] = 200, 1
    image[18:28, 16:26], labels[18:28, 16:26] = 180, 2
    return image, labels


def _entries(n: int = 2) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"n": np.asarray(n, np.int64), "ids": np.asarray([f"s{i}" for i in range(n)])}
    for i in range(n):
        out[f"images_{i:04d}"], out[f"labels_{i:04d}"] = _sample(i)
    return out


def _object_array() -> np.ndarray:
    arr = np.empty(2, object)
    arr[:] = ["a", 1]
    return arr


def _change(key: str, value: object | None):
    def edit(d: dict) -> None:
        if value is None:
            del d[key]
        else:
            d[key] = value() if callable(value) else value
    return edit


def _labels(dtype: str, value: int = 1):
    return lambda: np.full((32, 32), value, dtype)


# (case, edit of the valid entries, the entry the message must name, a word of the reason)
CASES = [
    ("n missing", _change("n", None), "'n'", "number of samples"),
    ("n a vector", _change("n", np.array([2, 2])), "'n'", "scalar"),
    ("n a float", _change("n", np.asarray(2.0)), "'n'", "integer"),
    ("n a string", _change("n", np.asarray("2")), "'n'", "integer"),
    ("n zero", _change("n", np.asarray(0)), "'n'", ">= 1"),
    ("n negative", _change("n", np.asarray(-3)), "'n'", ">= 1"),
    ("n too large", _change("n", np.asarray(3)), "images_0002", "lacks"),
    ("n too small", _change("n", np.asarray(1)), "images_0001", "disagree"),
    ("ids pickled", _change("ids", _object_array), "'ids'", "object array"),
    ("ids numbers", _change("ids", np.arange(2)), "'ids'", "strings"),
    ("ids too few", _change("ids", np.asarray(["a"])), "'ids'", "strings"),
    ("ids 2D", _change("ids", np.asarray([["a", "b"]])), "'ids'", "strings"),
    ("image missing", _change("images_0001", None), "images_0001", "lacks"),
    ("image pickled", _change("images_0000", _object_array), "images_0000", "object array"),
    ("image 3D", _change("images_0000", np.zeros((2, 32, 32), np.uint8)), "images_0000", "2D"),
    ("image empty", _change("images_0000", np.zeros((0, 0), np.uint8)), "images_0000", "empty"),
    ("image NaN", _change("images_0000", lambda: np.where(np.eye(32) > 0, np.nan, 1.0)), "images_0000", "NaN"),
    ("image inf", _change("images_0000", lambda: np.where(np.eye(32) > 0, np.inf, 1.0)), "images_0000", "infinite"),
    ("image strings", _change("images_0000", np.full((32, 32), "x")), "images_0000", "dtype"),
    ("image complex", _change("images_0000", np.ones((32, 32), complex)), "images_0000", "dtype"),
    ("image bool", _change("images_0000", np.ones((32, 32), bool)), "images_0000", "bool"),
    ("labels missing", _change("labels_0000", None), "labels_0000", "lacks"),
    ("labels pickled", _change("labels_0000", _object_array), "labels_0000", "object array"),
    ("labels float", _change("labels_0000", _labels("float32")), "labels_0000", "integer"),
    ("labels bool", _change("labels_0000", _labels("bool")), "labels_0000", "integer"),
    ("labels negative", _change("labels_0000", _labels("int32", -1)), "labels_0000", "negative"),
    ("labels huge ids", _change("labels_0000", _labels("uint64", 2**40)), "labels_0000", "1..N"),
    ("labels other shape", _change("labels_0001", np.zeros((16, 32), np.uint16)), "labels_0001", "shape"),
    ("labels 1D", _change("labels_0001", np.zeros(32, np.uint16)), "labels_0001", "2D"),
]


@pytest.mark.parametrize("case, edit, key, reason", CASES, ids=[c[0] for c in CASES])
def test_malformed_data_file(tmp_path, case, edit, key, reason):
    entries = _entries()
    edit(entries)
    path = tmp_path / "data.npz"
    np.savez(path, **entries)  # savez may pickle object arrays; loading must refuse them
    with pytest.raises(HtsError) as err:
        load_npz(path)
    message = str(err.value)
    assert str(path) in message and key in message and reason in message, message
    assert "\n" not in message


def _not_npz(path: Path, kind: str) -> None:
    good = path.with_name("good.npz")
    np.savez_compressed(good, **_entries())
    if kind == "text":
        path.write_text("n,images\n2,none\n")
    elif kind == "npy":
        np.save(path.with_suffix(".npy"), np.zeros(3))
        path.with_suffix(".npy").rename(path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"n": 2}))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[:-200])


@pytest.mark.parametrize("kind", ["text", "npy", "pickle", "empty", "truncated"])
def test_a_file_that_is_not_an_npz_archive(tmp_path, kind):
    path = tmp_path / "data.npz"
    _not_npz(path, kind)
    with pytest.raises(HtsError, match="not a .npz archive") as err:
        load_npz(path)
    assert str(path) in str(err.value)


def test_a_corrupt_entry_is_named(tmp_path):
    """The archive's directory is intact but one entry's compressed bytes are damaged."""
    path = tmp_path / "data.npz"
    np.savez_compressed(path, **_entries())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("labels_0001.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data[start + 10 : start + 40] = bytes(30)
    path.write_bytes(bytes(data))
    with pytest.raises(HtsError, match="'labels_0001' is unreadable") as err:
        load_npz(path)
    assert str(path) in str(err.value)


def test_an_entry_that_is_not_an_array(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, **_entries())
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("notes", "free text")  # np.load gives raw bytes for a member that is not .npy
    assert load_npz(path).ids == ["s0", "s1"]  # an extra entry is ignored...
    entries = _entries()
    del entries["n"]
    np.savez(path, **entries)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("n", "2")
    with pytest.raises(HtsError, match="entry 'n' is not a numpy array"):  # ...but a needed one is checked
        load_npz(path)


def test_a_valid_file_still_loads(tmp_path):
    path = tmp_path / "data.npz"
    np.savez_compressed(path, **_entries())
    data = load_npz(path)
    assert len(data) == 2 and data.ids == ["s0", "s1"] and data.images[1].dtype == np.uint8
    assert len(load_npz(path, limit=1)) == 1


PRED_CASES = [
    ("n a vector", _change("n", np.array([2])), "'n'", "scalar"),
    ("labels pickled", _change("labels_0001", _object_array), "labels_0001", "object array"),
    ("labels float", _change("labels_0000", _labels("float64")), "labels_0000", "integer"),
    ("labels negative", _change("labels_0000", _labels("int8", -2)), "labels_0000", "negative"),
    ("labels missing", _change("labels_0001", None), "labels_0001", "lacks"),
]


@pytest.mark.parametrize("case, edit, key, reason", PRED_CASES, ids=[c[0] for c in PRED_CASES])
def test_malformed_prediction_file(tmp_path, case, edit, key, reason):
    entries = {k: v for k, v in _entries().items() if not k.startswith("images_")}
    edit(entries)
    path = tmp_path / "pred.npz"
    np.savez(path, **entries)
    with pytest.raises(HtsError) as err:
        load_labels_npz(path)
    message = str(err.value)
    assert str(path) in message and key in message and reason in message, message


@pytest.mark.parametrize("which", ["data", "pred"])
def test_hts_eval_prints_one_line_and_exits_2(tmp_path, capsys, which):
    data, pred = tmp_path / "data.npz", tmp_path / "pred.npz"
    entries = _entries()
    np.savez(data, **entries)
    save_labels_npz(pred, [entries["labels_0000"], entries["labels_0001"]])
    assert main(["eval", "--data", str(data), "--pred", str(pred), "--json"]) == 0
    capsys.readouterr()
    bad = (dict(entries, n=np.array([2, 2])) if which == "data"
           else {"n": np.asarray(2), "labels_0000": _object_array(), "labels_0001": entries["labels_0001"]})
    np.savez(data if which == "data" else pred, **bad)
    assert main(["eval", "--data", str(data), "--pred", str(pred), "--json"]) == 2
    err = capsys.readouterr().err
    key = "'n'" if which == "data" else "labels_0000"
    assert err.count("\n") == 1 and err.startswith("hts: error: ") and key in err, err


UNPICKLED: list[str] = []


def _trip() -> str:
    UNPICKLED.append("unpickled")
    return "x"


class _Canary:
    """Unpickling it runs :func:`_trip`, as a hostile file would run its own code."""

    def __reduce__(self):
        return _trip, ()


def test_pickled_arrays_are_refused_without_being_unpickled(tmp_path):
    path = tmp_path / "data.npz"
    canary = np.empty(2, object)
    canary[:] = [_Canary(), _Canary()]
    np.savez(path, **dict(_entries(), ids=canary))
    assert np.load(path, allow_pickle=True)["ids"][0] == "x" and UNPICKLED  # the canary works...
    UNPICKLED.clear()
    with pytest.raises(HtsError, match="'ids' is an object array"):
        load_npz(path)
    assert not UNPICKLED  # ...and loading never ran it
