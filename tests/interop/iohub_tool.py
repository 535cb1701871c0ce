"""Write and read OME-Zarr plates with iohub, in iohub's own Python (run by tests/interop, never imported).

iohub 0.3 needs Python >= 3.12 and zarr 3, so it lives in its own virtual
environment (``make .venv-iohub``); the tests run this script there:

    python iohub_tool.py write PLATE.zarr FIELDS.npz VERSION   # a plate from real fields
    python iohub_tool.py read PLATE.zarr                       # JSON: positions, images, labels

``FIELDS.npz`` holds ``images`` ``(n, H, W)`` and ``wells`` (one ``"A/1"`` per field).
"""

from __future__ import annotations

import json
import sys

import numpy as np
from iohub.ngff import open_ome_zarr


def write(path: str, fields: str, version: str) -> None:
    data = np.load(fields)
    images, wells = data["images"], [str(w) for w in data["wells"]]
    with open_ome_zarr(path, layout="hcs", mode="w-", channel_names=["DAPI"], version=version) as plate:
        seen: dict[str, int] = {}
        for image, well in zip(images, wells):
            row, col = well.split("/")
            n = seen.get(well, 0)
            seen[well] = n + 1
            position = plate.create_position(row, col, str(n))
            position.create_image("0", image[None, None, None])  # (T, C, Z, Y, X), iohub's layout


def read(path: str) -> None:
    out = {}
    with open_ome_zarr(path, layout="hcs", mode="r") as plate:
        for name, position in plate.positions():
            labels = {}
            for label_name, label in position.labels():
                try:
                    array = label["0"]
                except KeyError as e:  # iohub could not read the label image's metadata
                    labels[label_name] = {"error": repr(e)}
                    continue
                labels[label_name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                                      "axes": [a.name for a in label.axes], "max": int(np.asarray(array).max())}
            out[name] = {"channels": position.channel_names, "shape": list(position["0"].shape),
                         "axes": [a.name for a in position.axes], "labels": labels}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"write": write, "read": read}[command](*args)
