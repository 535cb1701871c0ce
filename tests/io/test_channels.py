"""Choosing the nucleus channel of real multi-channel files: TIFF, ImageJ, OME-TIFF, RGB(A) PNG/TIFF, NPY."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from skimage.io import imsave

from hts.errors import HtsError
from hts.io.channels import MAX_UNLABELLED_CHANNELS, read_planes
from hts.io.images import open_image, read_image

RNG = np.random.default_rng(0)
DAPI = RNG.integers(0, 4000, (40, 48), dtype=np.uint16)
GFP = RNG.integers(0, 4000, (40, 48), dtype=np.uint16)
RED, GREEN, BLUE = (RNG.integers(0, 255, (40, 48), dtype=np.uint8) for _ in range(3))


def write(path, kind: str):
    """A file of ``kind`` under ``path`` (a folder); returns its path."""
    two = np.stack([DAPI, GFP])
    if kind == "plain":  # no axis information: tifffile's shaped series, axes QYX
        tifffile.imwrite(path / "plain.tif", two)
        return path / "plain.tif"
    if kind == "pages":  # a generic multi-page TIFF, axes IYX
        tifffile.imwrite(path / "pages.tif", two, metadata=None, photometric="minisblack")
        return path / "pages.tif"
    if kind == "imagej":
        tifffile.imwrite(path / "ij.tif", two, imagej=True, metadata={"axes": "CYX", "Labels": ["DAPI", "GFP"]})
        return path / "ij.tif"
    if kind == "ome":
        tifffile.imwrite(path / "x.ome.tif", two, ome=True, metadata={"axes": "CYX", "Channel": {"Name": ["DAPI", "GFP"]}})
        return path / "x.ome.tif"
    if kind == "ome-unnamed":
        tifffile.imwrite(path / "u.ome.tif", two, ome=True, metadata={"axes": "CYX"})
        return path / "u.ome.tif"
    if kind == "npy":
        np.save(path / "two.npy", two)
        return path / "two.npy"
    if kind == "rgb-png":
        imsave(path / "rgb.png", np.dstack([RED, GREEN, BLUE]), check_contrast=False)
        return path / "rgb.png"
    if kind == "rgba-tif":
        tifffile.imwrite(path / "rgba.tif", np.dstack([RED, GREEN, BLUE, np.full_like(RED, 255)]), photometric="rgb")
        return path / "rgba.tif"
    if kind == "rgb-planar":
        tifffile.imwrite(path / "planar.tif", np.stack([RED, GREEN, BLUE]), photometric="rgb")
        return path / "planar.tif"
    raise ValueError(kind)


@pytest.mark.parametrize("kind, second", [("plain", 1), ("pages", 1), ("imagej", "gfp"), ("ome", "GFP"),
                                          ("ome", 1), ("ome-unnamed", "1"), ("npy", 1)])
def test_two_channels_by_name_or_index(tmp_path, kind, second):
    path = write(tmp_path, kind)
    np.testing.assert_array_equal(read_image(path, 0), DAPI)
    np.testing.assert_array_equal(read_image(path, second), GFP)
    if kind in ("imagej", "ome"):
        np.testing.assert_array_equal(read_image(path, "dapi"), DAPI)  # case-insensitive


@pytest.mark.parametrize("kind, names", [("plain", "(0, 1)"), ("imagej", "(0=DAPI, 1=GFP)"),
                                         ("ome", "(0=DAPI, 1=GFP)"), ("ome-unnamed", "(0, 1)")])
def test_several_channels_and_none_chosen_lists_them(tmp_path, kind, names):
    with pytest.raises(HtsError, match="choose the nucleus channel with --channel") as e:
        read_image(write(tmp_path, kind), option="--channel")
    assert f"2 channels {names}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["rgb-png", "rgba-tif", "rgb-planar"])
def test_rgb_by_colour_name_or_index(tmp_path, kind):
    path = write(tmp_path, kind)
    for channel in ("B", "blue", "BLUE", 2, "2"):
        np.testing.assert_array_equal(read_image(path, channel), BLUE)
    np.testing.assert_array_equal(read_image(path, "red"), RED)
    np.testing.assert_array_equal(read_image(path, "G"), GREEN)
    assert read_planes(path).colour
    with pytest.raises(HtsError, match=r"channels \(0=R, 1=G, 2=B"):
        read_image(path)


def test_grey_saved_as_rgb_is_used_as_is(tmp_path):
    imsave(tmp_path / "grey.png", np.dstack([BLUE] * 3), check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "grey.png"), BLUE)
    tifffile.imwrite(tmp_path / "grey.tif", np.dstack([BLUE] * 3 + [np.zeros_like(BLUE)]), photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "grey.tif"), BLUE)  # alpha left out of the comparison
    imsave(tmp_path / "la.png", np.dstack([BLUE, np.full_like(BLUE, 255)]), check_contrast=False)
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), BLUE)


def test_single_channel_files_work_as_before(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", DAPI)
    tifffile.imwrite(tmp_path / "b.tif", DAPI[None, None])
    tifffile.imwrite(tmp_path / "c.tif", DAPI[..., None], metadata=None)  # 40 pages of (48, 1)
    tifffile.imwrite(tmp_path / "d.ome.tif", DAPI, ome=True, metadata={"axes": "YX", "Channel": {"Name": "DAPI"}})
    np.save(tmp_path / "e.npy", DAPI[..., None])
    imsave(tmp_path / "f.png", BLUE, check_contrast=False)
    for name in ("a.tif", "b.tif", "c.tif", "d.ome.tif", "e.npy"):
        np.testing.assert_array_equal(read_image(tmp_path / name), DAPI)
        np.testing.assert_array_equal(read_image(tmp_path / name, 0), DAPI)
    np.testing.assert_array_equal(read_image(tmp_path / "d.ome.tif", "dapi"), DAPI)
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), BLUE)


@pytest.mark.parametrize("channel, fragments", [
    ("Hoechst", ["--channel 'Hoechst': no such channel", "channels: 0=DAPI, 1=GFP"]),
    (2, ["--channel 2 out of range", "2 channel(s) (0=DAPI, 1=GFP)", "start at 0"]),
])
def test_unknown_channel_names_the_option_and_the_choices(tmp_path, channel, fragments):
    with pytest.raises(HtsError) as e:
        read_image(write(tmp_path, "ome"), channel, option="--channel")
    for f in fragments:
        assert f in str(e.value)


def test_unnamed_channels_say_to_choose_by_index(tmp_path):
    with pytest.raises(HtsError, match="names none, choose by index"):
        read_image(write(tmp_path, "plain"), "DAPI")


@pytest.mark.parametrize("case, fragment", [
    ("imagej-z", "3 z planes"), ("ome-czyx", "3 z planes"), ("ome-t", "4 time planes"),
    ("long", f"a stack of {MAX_UNLABELLED_CHANNELS + 1} planes with no axis information"),
    ("hw3-npy", "expected a 2D image"),
])
def test_stacks_that_are_not_channels_are_refused(tmp_path, case, fragment):
    path = tmp_path / ("x.npy" if case.endswith("npy") else "x.tif")
    if case == "imagej-z":
        tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    elif case == "ome-czyx":
        tifffile.imwrite(path, np.zeros((2, 3, 16, 16), np.uint16), ome=True, metadata={"axes": "CZYX"})
    elif case == "ome-t":
        tifffile.imwrite(path, np.zeros((4, 16, 16), np.uint16), ome=True, metadata={"axes": "TYX"})
    elif case == "long":
        tifffile.imwrite(path, np.zeros((MAX_UNLABELLED_CHANNELS + 1, 16, 16), np.uint16))
    else:
        np.save(path, np.zeros((32, 32, 3)))
    for channel in (None, 0):
        with pytest.raises(HtsError, match=fragment):
            read_image(path, channel)


def test_a_channel_of_a_zarr_array_points_to_hts_run(tmp_path):
    zarr.create_array(str(tmp_path / "a.zarr"), shape=(16, 16), dtype="uint16")
    assert open_image(tmp_path / "a.zarr").shape == (16, 16)
    with pytest.raises(HtsError, match="hts run --channel"):
        open_image(tmp_path / "a.zarr", 0, option="--channel")
