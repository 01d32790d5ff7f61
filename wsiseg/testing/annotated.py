"""Annotated image folders: small H&E-like PNGs with gland masks and grades, for training."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_annotated_folder(folder: str | os.PathLike[str], count: int = 6,
                           size: tuple[int, int] = (96, 128), seed: int = 0) -> dict[str, str]:
    """Write ``count`` H&E-like PNG images with gland masks and a ``grades.csv``; for training.

    Each image ``img_N.png`` has ``img_N_mask.png`` (1 = gland, 0 = other): pink stroma with
    a glass strip along the top and purple discs for glands. Images alternate between
    "benign" (pale glands) and "malignant" (dark, crowded glands), so the grade is visible in
    the pixels. Returns image stem -> grade.
    """
    import imagecodecs

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    grades = {}
    for n in range(count):
        grade = "benign" if n % 2 == 0 else "malignant"
        image = np.empty((h, w, 3), dtype=np.float32)
        image[:] = (235, 170, 200)
        mask = np.zeros((h, w), dtype=np.uint8)
        discs = 3 if grade == "benign" else 6
        colour = (170, 110, 190) if grade == "benign" else (90, 40, 120)
        for _ in range(discs):
            cy, cx = rng.uniform(h * 0.3, h * 0.9), rng.uniform(0.1 * w, 0.9 * w)
            r = rng.uniform(0.08, 0.14) * min(h, w)
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image[inside] = colour
            mask[inside] = 1
        image[: h // 8] = 250  # glass
        mask[: h // 8] = 0
        image += rng.normal(0, 6, image.shape)
        name = f"img_{n}"
        (folder / f"{name}.png").write_bytes(
            imagecodecs.png_encode(np.clip(image, 0, 255).astype(np.uint8)))
        (folder / f"{name}_mask.png").write_bytes(imagecodecs.png_encode(mask))
        grades[name] = grade
    with (folder / "grades.csv").open("w") as f:
        f.write("name,patient_id,grade\n")
        for i, (name, grade) in enumerate(grades.items()):
            f.write(f"{name},{i // 2},{grade}\n")
    return grades
