"""The one resize shared by preparation and exported models: a faithful antialiased resize that survives saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tuning.resize import ResizeRGB, resize_rgb


def _photo_like(height: int, width: int) -> np.ndarray:
    """Smooth random content: what a downscale of a real picture has to average, not raw noise."""
    noise = np.random.default_rng(height * 7 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(noise).filter(ImageFilter.GaussianBlur(3)))


@pytest.mark.parametrize("shape", [(750, 500), (33, 17), (1, 1), (32, 32)])
def test_a_flat_image_stays_flat_at_any_scale(shape: tuple[int, int]) -> None:
    out = resize_rgb(np.full((*shape, 3), (200, 10, 90), dtype=np.uint8), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out == np.array([200, 10, 90], dtype=np.uint8)).all()


def test_same_size_is_the_identity() -> None:
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(resize_rgb(image, 32), image)


def test_a_big_downscale_averages_like_pillows_antialiased_bilinear() -> None:
    """Pillow widens the triangle filter by the shrink factor; so does ours (plain bilinear would alias)."""
    image = _photo_like(600, 400)
    ours = resize_rgb(image, 48).astype(int)
    pillow = np.asarray(Image.fromarray(image).resize((48, 48), Image.Resampling.BILINEAR), dtype=int)
    assert np.abs(ours - pillow).max() <= 1 and np.abs(ours - pillow).mean() < 0.2


def test_the_layer_saves_and_loads_in_safe_mode_and_takes_any_size(tmp_path: Path) -> None:
    import keras

    from tuning.export import load_model

    image = keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model(image, ResizeRGB(24)(image))
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    for shape in [(50, 70), (24, 24), (9, 300)]:
        x = _photo_like(*shape)
        expected = resize_rgb(x, 24)
        assert np.array_equal(np.asarray(loaded.predict_on_batch(np.stack([x, x[::-1]])))[0], expected)
