"""hts.io: the atomic-write helper, label image files, lazy Zarr inputs, NGFF plane selection."""

from __future__ import annotations

import numpy as np
import pytest

from hts.io.atomic import atomic_write
from hts.io.images import open_image, read_image, write_label_file
from hts.io.planes import PlaneView


class Boom(Exception):
    pass


def test_atomic_write_bytes_and_writer(tmp_path):
    path = tmp_path / "a.json"
    assert atomic_write(path, b"{}") == path and path.read_bytes() == b"{}"
    atomic_write(path, lambda f: f.write(b"[1]"))
    assert path.read_bytes() == b"[1]"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


@pytest.mark.parametrize("error", [Boom, KeyboardInterrupt])
def test_atomic_write_leaves_no_partial_and_no_temp_file(tmp_path, error):
    def writer(f):
        f.write(b"partial")
        raise error

    old = tmp_path / "old.bin"
    old.write_bytes(b"old")
    with pytest.raises(error):
        atomic_write(old, writer)
    with pytest.raises(error):
        atomic_write(tmp_path / "new.bin", writer)
    assert old.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.bin"]


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_write_label_file_round_trip(tmp_path, suffix):
    labels = np.arange(12).reshape(3, 4)
    write_label_file(tmp_path / f"l{suffix}", labels)
    back = np.load(tmp_path / f"l{suffix}") if suffix == ".npy" else read_image(tmp_path / f"l{suffix}")
    assert back.dtype == np.uint32 and np.array_equal(back, labels)
    assert [p.name for p in tmp_path.iterdir()] == [f"l{suffix}"]


def test_zarr_with_singleton_axes_is_a_lazy_2d_view(tmp_path):
    import zarr

    image = np.random.default_rng(0).integers(0, 1000, (40, 56)).astype(np.uint16)
    zarr.open_array(str(tmp_path / "i.zarr"), mode="w", shape=(1, 1, 40, 56), chunks=(1, 1, 16, 16),
                    dtype="uint16")[...] = image[None, None]
    view = open_image(tmp_path / "i.zarr")
    assert isinstance(view, PlaneView) and view.shape == (40, 56) and view.dtype == np.uint16
    assert np.array_equal(view[3:9, ::5], image[3:9, ::5]) and np.array_equal(view[...], image)
    assert np.array_equal(view[2], image[2]) and np.array_equal(view[..., 7], image[:, 7])
    assert np.array_equal(np.asarray(view), image)


def test_segment_accepts_the_squeezed_view(tmp_path):
    import zarr

    import hts
    from hts.model import InstanceUNet, ModelConfig
    from hts.synthetic.nuclei import SyntheticConfig, generate

    image, _ = generate(SyntheticConfig(shape=(64, 80)), seed=1)
    image = (image * 1000).astype(np.uint16)
    zarr.open_array(str(tmp_path / "flat.zarr"), mode="w", shape=(64, 80), chunks=(32, 32), dtype="uint16")[...] = image
    zarr.open_array(str(tmp_path / "stack.zarr"), mode="w", shape=(1, 64, 80), chunks=(1, 32, 32),
                    dtype="uint16")[...] = image[None]
    model = InstanceUNet(ModelConfig(width=4))
    flat = hts.segment(open_image(tmp_path / "flat.zarr"), model, diameter=20)
    stack = hts.segment(open_image(tmp_path / "stack.zarr"), model, diameter=20)
    assert stack.shape == (64, 80) and np.array_equal(np.asarray(stack), np.asarray(flat))


def test_select_plane_is_lazy_on_dask_and_matches_read_plane(tmp_path):
    import dask.array as da
    import zarr

    from hts.io.ngff_image import ImageInfo, read_plane, select_plane

    data = np.random.default_rng(2).integers(0, 100, (2, 3, 4, 10, 12)).astype(np.uint16)
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=(1, 1, 1, 10, 12))[...] = data
    info = ImageInfo(("t", "c", "z", "y", "x"), ("0",), (data.shape,), ((1.0,) * 5,), (10, 12), ())
    assert np.array_equal(read_plane(group, info, 1), data[0, 1].max(axis=0))
    assert np.array_equal(read_plane(group, info, 2, z=3, region=(slice(2, 5), slice(None))), data[0, 2, 3, 2:5])
    lazy = select_plane(da.from_zarr(group["0"]), info, 1)
    assert isinstance(lazy, da.Array) and np.array_equal(lazy.compute(), data[0, 1].max(axis=0))
