"""``hts segment --channel`` on real multi-channel files, and ``hts run`` on TIFFs naming the command to use."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from skimage.io import imsave

from cli_run import hts, hts_in_process, one_line_error
from hts.synthetic.nuclei import SyntheticConfig, generate


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A 256x256 uint8 nucleus image, its single-channel TIFF and the files that hold it as one channel of several."""
    d = tmp_path_factory.mktemp("channels")
    nuclei, _ = generate(SyntheticConfig(shape=(256, 256), dtype="uint8"), seed=3)
    other, _ = generate(SyntheticConfig(shape=(256, 256), dtype="uint8"), seed=4)  # a second stain, elsewhere
    tifffile.imwrite(d / "nuclei.tif", nuclei)
    tifffile.imwrite(d / "two.ome.tif", np.stack([other, nuclei]), ome=True,
                     metadata={"axes": "CYX", "Channel": {"Name": ["GFP", "DAPI"]}})
    imsave(d / "blue.png", np.dstack([other, other // 2, nuclei]), check_contrast=False)  # nuclei in blue
    imsave(d / "grey.png", np.dstack([nuclei] * 3), check_contrast=False)
    return d


def labels_of(capsys, args, out):
    proc = hts_in_process(capsys, "segment", *args, out)
    assert proc.returncode == 0, proc.stderr
    assert "nuclei ->" in proc.stdout
    return tifffile.imread(out)


def test_a_channel_segments_as_the_single_channel_image(images, tmp_path, capsys):
    """The shipped model, as a user runs it: the chosen plane gives the labels of the plane saved alone."""
    want = labels_of(capsys, [images / "nuclei.tif"], tmp_path / "ref.tif")
    assert want.max() > 20
    for args in ([images / "two.ome.tif", "--channel", "dapi"],
                 [images / "blue.png", "--channel", "blue"],
                 [images / "grey.png"]):
        np.testing.assert_array_equal(labels_of(capsys, args, tmp_path / "out.tif"), want, err_msg=str(args))


def test_segment_refusals_are_one_line(images, tmp_path, capsys):
    out = tmp_path / "o.tif"

    def hts(*args):
        return hts_in_process(capsys, *args)

    one_line_error(hts("segment", images / "two.ome.tif", out), "2 channels (0=GFP, 1=DAPI)",
                   "--channel NAME|INDEX")
    one_line_error(hts("segment", images / "two.ome.tif", out, "--channel", "Hoechst"),
                   "--channel 'Hoechst'", "0=GFP, 1=DAPI")
    one_line_error(hts("segment", images / "blue.png", out, "--channel", "3"),
                   "--channel 3 out of range", "0=R, 1=G, 2=B")
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((3, 32, 32), np.uint16), imagej=True, metadata={"axes": "ZYX"})
    one_line_error(hts("segment", tmp_path / "z.tif", out, "--channel", "0"), "3 z planes")
    assert not out.exists()


def test_run_on_tiffs_names_the_command_to_use(images, tmp_path):
    one_line_error(hts("run", images / "nuclei.tif"), "not a Zarr group", f"hts segment {images / 'nuclei.tif'}")
    folder = tmp_path / "plate_tiffs"
    folder.mkdir()
    tifffile.imwrite(folder / "A01_f0.tif", np.zeros((32, 32), np.uint16))
    one_line_error(hts("run", folder), "a folder of TIFF files", f"hts import {folder} OUT.zarr", "hts segment")
