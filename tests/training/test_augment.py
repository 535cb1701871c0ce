"""hts.training.augment: augmentation keeps image, labels and boxes consistent."""

from __future__ import annotations

import numpy as np

from hts.engine.preprocess import normalize
from hts.model.boxes import boxes_from_labels
from hts.synthetic.nuclei import SyntheticConfig, generate
from hts.training.augment import AugmentParams, augment, warp_pair


def test_augmentation_is_consistent_for_image_labels_and_boxes():
    image, labels = generate(SyntheticConfig(shape=(128, 128), dtype="float32", debris=0), seed=4)
    rng = np.random.default_rng(0)
    norm = normalize(image)
    for _ in range(5):
        im, lb = augment(rng, norm, labels, (96, 96), AugmentParams())
        assert im.shape == lb.shape == (96, 96) and lb.dtype == labels.dtype
        assert set(np.unique(lb)) <= set(np.unique(labels))  # nearest-neighbour labels: no new ids
        if lb.any():
            inside, outside = im[lb > 0].mean(), im[lb == 0].mean()
            assert inside > outside + 0.2  # nuclei stay where the labels are
            boxes = boxes_from_labels(lb)
            ys, xs = np.nonzero(lb == np.unique(lb)[1])
            assert tuple(boxes[0]) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_warp_identity_is_a_crop_and_outside_is_background():
    image = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    labels = (image % 7).astype(np.int32)
    im, lb = warp_pair(image, labels, np.eye(2), (31.5, 31.5), (32, 32))
    np.testing.assert_allclose(im, image[16:48, 16:48], atol=1e-3)
    np.testing.assert_array_equal(lb, labels[16:48, 16:48])
    im, lb = warp_pair(image, labels, np.eye(2), (0.0, 0.0), (32, 32))  # three quarters outside
    assert (im[:15] == 0).all() and (lb[:15] == 0).all()
