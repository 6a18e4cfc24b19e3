"""The active-learning score: the served model's uncertainty about an image."""

from __future__ import annotations

import math

import torch

from medxfer.label.uncertainty import entropy_score, image_uncertainty
from tests.workflows.export.helpers import SEG_3D, make_run


def test_confident_models_score_low_and_unsure_ones_high():
    sure = torch.zeros(3, 4, 4, 4)
    sure[0] = 1.0
    sure[0, 1, 1, 1], sure[1, 1, 1, 1] = 0.0, 1.0  # one voxel of structure, certain
    assert entropy_score(sure) < 1e-6
    unsure = torch.full((3, 4, 4, 4), 1.0 / 3)
    assert math.isclose(entropy_score(unsure), 1.0, rel_tol=1e-5)
    half = torch.zeros(2, 4, 4, 4)
    half[0] = 1.0
    half[:, 0, 0, 0] = 0.5  # one voxel the model cannot decide; the rest is background
    assert math.isclose(entropy_score(half), 1.0, rel_tol=1e-5)


def test_an_image_with_nothing_the_model_knows_scores_one():
    background = torch.zeros(3, 4, 4, 4)
    background[0] = 1.0
    assert entropy_score(background) == 1.0


def test_image_uncertainty_of_a_run_on_a_real_image(repo_root, tmp_path):
    loaded = make_run(tmp_path / "run", SEG_3D, spatial_dims=3, num_classes=3)
    image = repo_root / "sample_data" / "segmentation_3d" / "imagesTr" / "sample_000.nii.gz"
    score = image_uncertainty(loaded, image)
    assert 0.0 <= score <= 1.0
    assert score == image_uncertainty(loaded, image)
