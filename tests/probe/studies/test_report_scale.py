"""Report figures at Something-Something v2's 174 classes: the size of a figure must not grow past
what a reader can see, or plotting one confusion matrix takes gigabytes."""

from __future__ import annotations

import numpy as np
from PIL import Image

from stepcli.probe.studies.report import plot_confusion


def test_confusion_plot_of_174_classes_is_bounded(tmp_path):
    n = 174
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 5, (n, n)) + 20 * np.eye(n, dtype=int)
    names = [f"class {i}" for i in range(n)]
    path = plot_confusion(confusion.tolist(), names, [(names[0], names[1])], "logreg", tmp_path / "confusion.png")
    width, height = Image.open(path).size
    assert width * height <= 2500 * 2500, (width, height)  # unbounded: about 9000 x 9000 pixels at 174 classes
