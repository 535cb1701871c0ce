"""Reading OME-Zarr as other writers produce it, and what older killed runs left: tolerant where it costs
nothing, strict per well and field, and never refusing a plate for one broken part."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from hts.errors import HtsError
from hts.io.ngff import open_source
from hts.io.ngff_image import image_info, read_plane
from hts.io.ngff_write import repair_output, write_labels
from hts.io.results import Results
from hts.synthetic.plate import PlateSpec, write_plate


@pytest.fixture(params=["0.4", "0.5"])
def plate(request, tmp_path) -> Path:
    path = tmp_path / "plate.zarr"
    write_plate(path, PlateSpec(rows=1, columns=2, fields=2, size=64, version=request.param))
    return path


def _edit_attrs(group_path: Path, edit) -> None:
    group = zarr.open_group(str(group_path), mode="r+")
    attrs = dict(group.attrs)
    edit(attrs.get("ome", attrs))
    group.attrs.put(attrs)


def test_upper_case_axes_and_identity_transforms_are_read(plate):
    def iohub_style(ome):
        for axis in ome["multiscales"][0]["axes"]:
            axis["name"] = axis["name"].upper()
        for d in ome["multiscales"][0]["datasets"]:
            d["coordinateTransformations"] = [{"type": "identity"}]

    _edit_attrs(plate / "A/1/0", iohub_style)
    source = open_source(plate)
    assert "A/1/0" in [f.path for f in source.fields] and not source.skipped
    group = zarr.open_group(str(plate / "A/1/0"), mode="r")
    info = image_info(group, "A/1/0")
    assert info.axes == ("c", "y", "x") and info.yx_scales[0] == (1.0, 1.0)
    reference = zarr.open_group(str(plate / "A/1/1"), mode="r")
    assert read_plane(group, info, 0).shape == read_plane(reference, image_info(reference), 0).shape


def test_one_invalid_field_is_skipped_with_the_first_reason_and_the_rest_listed(plate):
    _edit_attrs(plate / "A/2/1", lambda ome: ome["multiscales"][0].pop("axes"))
    source = open_source(plate)
    assert [f.path for f in source.fields] == ["A/1/0", "A/1/1", "A/2/0"]
    (ref, why), = source.skipped
    assert ref.path == "A/2/1" and "invalid NGFF" in why and "multiscales.0.axes" in why and "Field required" in why


def test_an_unreadable_plate_root_names_its_file(plate):
    meta = plate / (".zattrs" if (plate / ".zattrs").exists() else "zarr.json")
    meta.write_text(meta.read_text()[:30])
    with pytest.raises(HtsError, match=rf"{meta.name}: not valid JSON"):
        open_source(plate)


def test_a_plate_with_no_readable_field_is_refused_naming_the_first_reason(plate):
    for well in ("A/1", "A/2"):
        shutil.rmtree(plate / well)
    with pytest.raises(HtsError, match="no readable field.*absent on disk"):
        open_source(plate)


def test_the_labels_group_older_versions_left_without_its_list_is_repaired(plate):
    """The brick of issue 16: ``labels`` created empty, killed before its list was written."""
    for field in ("A/1/0", "A/1/1"):
        shutil.rmtree(plate / field / "labels")
    image = zarr.open_group(str(plate), mode="r+")["A/1/0"]
    image.create_group("labels").create_group("nuclei")  # what begin_labels of older versions left
    from ome_zarr_models import open_ome_zarr

    with pytest.raises(Exception):  # a strict reader refuses the whole plate
        open_ome_zarr(zarr.open_group(str(plate), mode="r"))
    source = open_source(plate)  # hts reads it: input labels are not validated
    assert len(source.fields) == 4
    assert any("labels" in line for line in repair_output(plate, source))
    open_ome_zarr(zarr.open_group(str(plate), mode="r"))  # valid again
    fmt = Results.fmt_of(source.version)
    write_labels(zarr.open_group(str(plate), mode="r+")["A/1/0"], np.ones((64, 64), np.uint32),
                 image_info(image), fmt)
    open_ome_zarr(zarr.open_group(str(plate), mode="r"))
    assert repair_output(plate, source) == []  # nothing left to repair


def test_labels_written_by_another_tool_without_a_list_are_not_replaced(plate):
    _edit_attrs(plate / "A/1/0/labels", lambda ome: ome.pop("labels"))
    image = zarr.open_group(str(plate), mode="r+")["A/1/0"]
    with pytest.raises(HtsError, match="another tool"):
        write_labels(image, np.ones((64, 64), np.uint32), image_info(image), Results.fmt_of(open_source(plate).version))
    assert (plate / "A/1/0/labels/truth").is_dir()


def test_odd_plate_listings_are_read_around(plate):
    def edit(ome):
        wells = ome["plate"]["wells"]
        wells.append(dict(wells[0]))  # A/1 listed twice
        wells[1]["rowIndex"] = 99  # A/2 outside the plate

    _edit_attrs(plate, edit)
    source = open_source(plate)
    assert [f.path for f in source.fields] == ["A/1/0", "A/1/1"]
    (ref, why), = source.skipped
    assert ref.well == "A/2" and "rowIndex 99" in why
    assert source.notes == [f"{plate}: well A/1 is listed twice in the plate metadata; segmented once"]


def test_reasons_are_one_line(plate):
    _edit_attrs(plate, lambda ome: ome["plate"]["wells"][0].update(path="../x"))
    with pytest.raises(HtsError) as e:
        open_source(plate)
    assert "\n" not in str(e.value) and "is not in list of rows" in str(e.value)
