"""Vectorised training augmentation of whole batches (``data.augment_on: batch``).

The per-item MONAI chain of :mod:`medxfer.data.augment` costs about a millisecond of Python
per item; on a 28x28 MedMNIST image that is a fifth of a MobileNet training step, and data
loading becomes the bottleneck. Here the same ops, with the same options, defaults and
parameter distributions as the per-item MONAI transforms they stand for, act on a collated
batch ``[B, C, *spatial]`` at once, on whatever device the batch is on:

* each sample draws its own parameters and its own ``prob`` coin;
* ``flip`` flips the chosen samples (``torch.flip``, exact);
* ``rotate``, ``scale`` and ``affine`` each give every sample a pull matrix in voxel
  coordinates about the image centre (as MONAI's ``RandAffine``: rotation, shear,
  translation, scaling); consecutive ones are composed and resampled once with MONAI's
  :class:`~monai.networks.layers.AffineTransform`, bilinear for the image, nearest for a
  segmentation mask, zeros outside;
* ``contrast``, ``brightness``, ``gamma`` and ``noise`` change the image only, as MONAI's
  ``RandScaleIntensityFixedMean``, ``RandShiftIntensity``, ``RandAdjustContrast`` and
  ``RandGaussianNoise`` do.

``elastic``, ``blur`` and ``bias_field`` have no batch form here; a config that asks for them
with ``augment_on: batch`` is refused (use ``augment_on: cpu``).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from medxfer.errors import ConfigError

MATRIX_OPS = ("rotate", "scale", "affine")
BATCH_OPS = ("flip", *MATRIX_OPS, "contrast", "brightness", "gamma", "noise")


def _uniform(gen: torch.Generator, n: int, low: float, high: float, *shape: int) -> torch.Tensor:
    return torch.rand((n, *shape), generator=gen) * (high - low) + low


def _rotation(angles: torch.Tensor, dims: int) -> torch.Tensor:
    """``[B, dims, dims]`` rotations: 2D from ``[B, 1]`` angles, 3D from ``[B, 3]`` angles
    about each axis in turn."""
    n = angles.shape[0]
    if dims == 2:
        c, s = torch.cos(angles[:, 0]), torch.sin(angles[:, 0])
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    out = torch.eye(3).repeat(n, 1, 1)
    for axis in range(3):
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        a, b = [i for i in range(3) if i != axis]
        if axis == 1:  # MONAI's create_rotate: the right-handed sense about the middle axis
            s = -s
        r = torch.eye(3).repeat(n, 1, 1)
        r[:, a, a], r[:, a, b], r[:, b, a], r[:, b, b] = c, -s, s, c
        out = out @ r
    return out


def _shear(coefs: torch.Tensor, dims: int) -> torch.Tensor:
    """``[B, dims, dims]`` shears from ``[B, dims*(dims-1)]`` coefficients, composed as
    MONAI's ``create_shear`` does (one elementary shear per off-diagonal entry, row by row,
    each pre-multiplied: determinant 1)."""
    n = coefs.shape[0]
    out = torch.eye(dims).repeat(n, 1, 1)
    entries = [(i, j) for i in range(dims) for j in range(dims) if i != j]
    for k, (i, j) in enumerate(entries):
        step = torch.eye(dims).repeat(n, 1, 1)
        step[:, i, j] = coefs[:, k]
        out = step @ out
    return out


def _homogeneous(linear: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    n, d = linear.shape[0], linear.shape[1]
    out = torch.eye(d + 1).repeat(n, 1, 1)
    out[:, :d, :d] = linear
    if shift is not None:
        out[:, :d, d] = shift
    return out


def affine_matrices(rotate: torch.Tensor, shear: torch.Tensor, translate: torch.Tensor,
                    scale: torch.Tensor) -> torch.Tensor:
    """Homogeneous pull matrices ``[B, d+1, d+1]`` composed in MONAI's ``AffineGrid`` order
    (rotate, shear, translate, scale) from rotations ``[B, d, d]``, shear matrices
    ``[B, d, d]``, translations ``[B, d]`` (voxels) and scale factors ``[B, d]``."""
    n, d = translate.shape
    eye = torch.eye(d).repeat(n, 1, 1)
    return (_homogeneous(rotate) @ _homogeneous(shear) @ _homogeneous(eye, translate)
            @ _homogeneous(torch.diag_embed(scale)))


class BatchAugmentation:
    """Random training augmentation of collated batches, sample by sample, all at once.

    Args:
        ops: Resolved op specs ``[{name, **options}]`` (see :mod:`medxfer.data.augment`).
        spatial_dims: 2 or 3.
        segmentation: Move the ``label`` mask with the image (nearest interpolation).
        spatial_size: Image (or patch) size; translation ranges are fractions of it.
        seed: Seed of the random state (:meth:`set_random_state` reseeds).

    Raises:
        ConfigError: for an op with no batch form, an unknown op or option, or a bad option.
    """

    def __init__(self, ops: list[dict[str, Any]], *, spatial_dims: int, segmentation: bool,
                 spatial_size: list[int] | None, seed: int = 0) -> None:
        from medxfer.data.augment import OPS, build_augmentation, check_op, default_flip_axes

        # the per-item build checks every option's value, with the same messages
        build_augmentation("none", ops, spatial_dims=spatial_dims, segmentation=segmentation,
                           spatial_size=spatial_size)
        self.dims = spatial_dims
        self.segmentation = segmentation
        self.size = list(spatial_size or [64] * spatial_dims)
        self.ops: list[tuple[str, dict[str, Any]]] = []
        for index, spec in enumerate(ops):
            name, options = check_op(spec, index)
            if name not in BATCH_OPS:
                raise ConfigError(
                    f"data.augment.ops[{index}] ({name}): data.augment_on: batch supports "
                    f"{', '.join(BATCH_OPS)}; set data.augment_on: cpu to use {name}")
            bound = inspect.signature(OPS[name]).bind(None, **options)
            bound.apply_defaults()
            params = dict(list(bound.arguments.items())[1:])
            if name == "flip" and params["axes"] is None:  # axes checked by the build above
                params["axes"] = default_flip_axes(spatial_dims)
            self.ops.append((name, params))
        self._cpu = torch.Generator()
        self._device_gens: dict[str, torch.Generator] = {}
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> BatchAugmentation:
        """Reseed every random draw (parameters on the CPU, noise fields on their device)."""
        self.seed = int(seed) % (2 ** 63)
        self._cpu.manual_seed(self.seed)
        self._device_gens.clear()
        return self

    def random_state_dict(self) -> dict[str, Any]:
        """Where every random stream stands (saved in a checkpoint so that a resumed run
        draws what the uninterrupted one would)."""
        return {"cpu": self._cpu.get_state(),
                "devices": {key: gen.get_state() for key, gen in self._device_gens.items()}}

    def load_random_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the streams :meth:`random_state_dict` saved."""
        self._cpu.set_state(state["cpu"])
        self._device_gens.clear()
        for key, gen_state in state.get("devices", {}).items():
            self._noise_generator(torch.device(key)).set_state(gen_state)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (spawned loader workers): generators travel as their states."""
        state = dict(self.__dict__)
        state["_cpu"] = self._cpu.get_state()
        state["_device_gens"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        cpu = torch.Generator()
        cpu.set_state(state.pop("_cpu"))
        self.__dict__.update(state, _cpu=cpu)

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._device_gens:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.seed + 1)
            self._device_gens[key] = gen
        return self._device_gens[key]

    def __call__(self, image: torch.Tensor, label: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Augment ``image`` ``[B, C, *spatial]`` (float) and, for segmentation, ``label``
        ``[B, 1, *spatial]`` (moved with the image; returned with its own dtype)."""
        if image.ndim != self.dims + 2:
            raise ValueError(f"expected a batch [B, C, {self.dims} spatial dims], "
                             f"got shape {list(image.shape)}")
        image = image.float()
        moving = label if self.segmentation else None
        pending: torch.Tensor | None = None  # composed pull matrices not yet resampled
        for name, params in self.ops:
            if name in MATRIX_OPS:
                matrix = getattr(self, f"_{name}_matrix")(image.shape[0], **params)
                pending = matrix if pending is None else pending @ matrix
                continue
            if pending is not None:
                image, moving = self._resample(image, moving, pending)
                pending = None
            if name == "flip":
                image, moving = self._flip(image, moving, **params)
            else:
                image = getattr(self, f"_{name}")(image, **params)
        if pending is not None:
            image, moving = self._resample(image, moving, pending)
        return image, moving if self.segmentation else label

    # -- geometric ----------------------------------------------------------------------

    def _chosen(self, n: int, prob: float) -> torch.Tensor:
        return torch.rand(n, generator=self._cpu) < prob

    def _flip(self, image: torch.Tensor, label: torch.Tensor | None, *, prob: float,
              axes: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        for axis in axes:  # one coin per axis, as one MONAI RandFlip per axis
            chosen = self._chosen(image.shape[0], prob).to(image.device)
            if not bool(chosen.any()):
                continue
            shape = (-1,) + (1,) * (image.ndim - 1)
            image = torch.where(chosen.view(shape), image.flip(axis + 2), image)
            if label is not None:
                label = torch.where(chosen.view(shape), label.flip(axis + 2), label)
        return image, label

    def _keep(self, matrices: torch.Tensor, prob: float) -> torch.Tensor:
        """Identity for the samples whose coin said no."""
        chosen = self._chosen(matrices.shape[0], prob)
        eye = torch.eye(self.dims + 1).expand_as(matrices)
        return torch.where(chosen.view(-1, 1, 1), matrices, eye)

    def _rotate_matrix(self, n: int, *, prob: float, degrees: float) -> torch.Tensor:
        r = math.radians(degrees)
        angles = _uniform(self._cpu, n, -r, r, 1 if self.dims == 2 else 3)
        return self._keep(_homogeneous(_rotation(angles, self.dims)), prob)

    def _scale_matrix(self, n: int, *, prob: float, range: float) -> torch.Tensor:  # noqa: A002
        zoom = _uniform(self._cpu, n, 1 - range, 1 + range, 1)  # RandZoom: one zoom, all axes
        linear = torch.diag_embed((1.0 / zoom).expand(n, self.dims))  # pull: zoom in = shrink
        return self._keep(_homogeneous(linear), prob)

    def _affine_matrix(self, n: int, *, prob: float, degrees: float, scale: float,
                       translate: float, shear: float) -> torch.Tensor:
        d = self.dims
        r = math.radians(degrees)
        rotate = _rotation(_uniform(self._cpu, n, -r, r, 1 if d == 2 else 3), d)
        shears = (_shear(_uniform(self._cpu, n, -shear, shear, d * (d - 1)), d) if shear
                  else torch.eye(d).repeat(n, 1, 1))
        limits = torch.tensor([translate * s for s in self.size])
        shift = (torch.rand((n, d), generator=self._cpu) * 2 - 1) * limits
        factors = 1 + _uniform(self._cpu, n, -scale, scale, d)
        return self._keep(affine_matrices(rotate, shears, shift, factors), prob)

    def _resample(self, image: torch.Tensor, label: torch.Tensor | None,
                  matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        from monai.networks.layers import AffineTransform

        eye = torch.eye(self.dims + 1)
        moved = ~torch.isclose(matrices, eye).flatten(1).all(1)
        if not bool(moved.any()):
            return image, label
        rows = moved.nonzero().flatten().to(image.device)
        # about the image centre, in voxel indices: MONAI's Affine gives the same result
        centre = torch.tensor([(s - 1) / 2 for s in image.shape[2:]])
        to_centre = _homogeneous(torch.eye(self.dims)[None], centre[None])
        from_centre = _homogeneous(torch.eye(self.dims)[None], -centre[None])
        theta = (to_centre @ matrices[moved] @ from_centre).to(image.device)
        common = {"normalized": False, "zero_centered": False, "align_corners": True,
                  "padding_mode": "zeros"}
        image = image.clone()
        image[rows] = AffineTransform(mode="bilinear", **common)(image[rows], theta)
        if label is not None:
            label = label.clone()
            warped = AffineTransform(mode="nearest", **common)(label[rows].float(), theta)
            label[rows] = warped.round().to(label.dtype)
        return image, label

    # -- intensity (image only) -----------------------------------------------------------

    def _per_sample(self, image: torch.Tensor, values: torch.Tensor, prob: float,
                    neutral: float) -> torch.Tensor:
        """``values`` where the coin said yes, ``neutral`` elsewhere, shaped to broadcast."""
        chosen = self._chosen(image.shape[0], prob)
        values = torch.where(chosen, values, torch.full_like(values, neutral))
        return values.to(image.device).view((-1,) + (1,) * (image.ndim - 1))

    def _contrast(self, image: torch.Tensor, *, prob: float, factor: float) -> torch.Tensor:
        scale = self._per_sample(image, 1 + _uniform(self._cpu, image.shape[0], -factor,
                                                     factor), prob, 1.0)
        mean = image.mean(dim=tuple(range(1, image.ndim)), keepdim=True)
        return (image - mean) * scale + mean

    def _brightness(self, image: torch.Tensor, *, prob: float, offset: float) -> torch.Tensor:
        shift = _uniform(self._cpu, image.shape[0], -offset, offset)
        return image + self._per_sample(image, shift, prob, 0.0)

    def _gamma(self, image: torch.Tensor, *, prob: float, low: float,
               high: float) -> torch.Tensor:
        gamma = self._per_sample(image, _uniform(self._cpu, image.shape[0], low, high),
                                 prob, 1.0)
        dims = tuple(range(1, image.ndim))
        lo, hi = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
        spread = hi - lo
        adjusted = ((image - lo) / (spread + 1e-7)).clamp_min(0) ** gamma * spread + lo
        return torch.where(gamma == 1.0, image, adjusted)

    def _noise(self, image: torch.Tensor, *, prob: float, std: float) -> torch.Tensor:
        sigma = self._per_sample(image, _uniform(self._cpu, image.shape[0], 0.0, std),
                                 prob, 0.0)
        gen = self._noise_generator(image.device)
        field = torch.randn(image.shape, generator=gen, device=image.device)
        return image + field * sigma

