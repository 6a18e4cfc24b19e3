"""Training-time augmentation: named presets and overridable op lists of MONAI transforms.

An op is ``{name: ..., **options}`` (``data.augment.ops``); a preset is a fixed op list.
Geometric ops move the image and its mask together (mask with nearest interpolation);
intensity ops touch the image only. The result is a seeded ``monai.transforms.Compose``.

Ops and their options (``prob`` is the chance of applying each):

* ``flip``: ``prob=0.5``, ``axes`` (default: the left-right axis: 2D width, 3D first axis)
* ``rotate``: ``prob=0.5``, ``degrees=15`` (3D: about every axis)
* ``scale``: ``prob=0.5``, ``range=0.1`` (zoom in ``[1-range, 1+range]``, size kept)
* ``affine``: ``prob=0.5``, ``degrees=10``, ``scale=0.1``, ``translate=0.05`` (fraction of
  the size), ``shear=0.0``
* ``elastic``: ``prob=0.3``, ``magnitude=1.0`` (relative strength)
* ``contrast``: ``prob=0.5``, ``factor=0.2`` (scale around the mean)
* ``brightness``: ``prob=0.5``, ``offset=0.1``
* ``gamma``: ``prob=0.3``, ``low=0.7``, ``high=1.5``
* ``noise``: ``prob=0.2``, ``std=0.05``
* ``blur``: ``prob=0.2``, ``sigma=1.0``
* ``bias_field``: ``prob=0.3``, ``coeff=0.2``
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable

from medxfer.errors import ConfigError

PRESETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "light": [{"name": "flip"}],
    "standard": [{"name": "flip"}, {"name": "affine"}, {"name": "contrast"},
                 {"name": "brightness"}],
    "heavy": [{"name": "flip"}, {"name": "affine", "degrees": 15, "scale": 0.15,
                                 "translate": 0.1, "shear": 0.05},
              {"name": "elastic"}, {"name": "contrast", "factor": 0.3},
              {"name": "brightness", "offset": 0.15}, {"name": "gamma"}, {"name": "noise"},
              {"name": "blur"}, {"name": "bias_field"}],
}


class _Ctx:
    """What an op factory needs: dimensionality, keys and (optionally) the image size."""

    def __init__(self, spatial_dims: int, segmentation: bool, spatial_size: list[int] | None,
                 fixed_size: bool = False):
        self.dims = spatial_dims
        self.seg = segmentation
        self.size = spatial_size
        self.fixed = fixed_size and spatial_size is not None
        self.keys = ["image", "label"] if segmentation else ["image"]

    def modes(self, linear: str = "bilinear") -> Any:
        return (linear, "nearest") if self.seg else linear


def default_flip_axes(spatial_dims: int) -> list[int]:
    """The left-right axis that ``flip`` (and ``eval.tta: flip``) uses by default: the
    width of a 2D image, the first axis of a 3D volume."""
    return [1] if spatial_dims == 2 else [0]


def _flip(ctx: _Ctx, prob: float = 0.5, axes: list[int] | None = None) -> list[Any]:
    from monai.transforms import RandFlipd

    axes = axes if axes is not None else default_flip_axes(ctx.dims)
    for a in axes:
        if not 0 <= a < ctx.dims:
            raise ConfigError(f"data.augment.ops flip: axis {a} is not a spatial axis "
                              f"(0..{ctx.dims - 1})")
    return [RandFlipd(keys=ctx.keys, prob=prob, spatial_axis=a) for a in axes]


def _rotate(ctx: _Ctx, prob: float = 0.5, degrees: float = 15.0) -> list[Any]:
    from monai.transforms import RandRotated

    r = math.radians(degrees)
    extra = {"range_y": r, "range_z": r} if ctx.dims == 3 else {}
    return [RandRotated(keys=ctx.keys, range_x=r, prob=prob, keep_size=True,
                        mode=ctx.modes(), padding_mode="zeros", **extra)]


def _scale(ctx: _Ctx, prob: float = 0.5, range: float = 0.1) -> list[Any]:  # noqa: A002
    from monai.transforms import RandZoomd

    linear = "bilinear" if ctx.dims == 2 else "trilinear"
    return [RandZoomd(keys=ctx.keys, prob=prob, min_zoom=1 - range, max_zoom=1 + range,
                      mode=ctx.modes(linear), keep_size=True)]


def _affine(ctx: _Ctx, prob: float = 0.5, degrees: float = 10.0, scale: float = 0.1,
            translate: float = 0.05, shear: float = 0.0) -> list[Any]:
    from monai.transforms import RandAffined

    r = math.radians(degrees)
    size = ctx.size or [64] * ctx.dims
    n_rot = 1 if ctx.dims == 2 else 3
    # Items of one known size: MONAI keeps the identity sampling grid instead of building
    # it for every item (the same values; a 28x28 affine took 0.95 ms instead of 1.10).
    grid = {"spatial_size": list(ctx.size), "cache_grid": True} if ctx.fixed else {}
    return [RandAffined(keys=ctx.keys, prob=prob, rotate_range=[r] * n_rot,
                        scale_range=[scale] * ctx.dims,
                        translate_range=[translate * s for s in size],
                        shear_range=[shear] * (2 if ctx.dims == 2 else 6) if shear else None,
                        mode=ctx.modes(), padding_mode="zeros", **grid)]


def _elastic(ctx: _Ctx, prob: float = 0.3, magnitude: float = 1.0) -> list[Any]:
    from monai.transforms import Rand2DElasticd, Rand3DElasticd

    size = ctx.size or [64] * ctx.dims
    if ctx.dims == 2:
        spacing = [max(4, s // 4) for s in size]
        return [Rand2DElasticd(keys=ctx.keys, prob=prob, spacing=spacing,
                               magnitude_range=(0.5 * magnitude, 1.5 * magnitude),
                               mode=ctx.modes(), padding_mode="zeros")]
    return [Rand3DElasticd(keys=ctx.keys, prob=prob, sigma_range=(5, 7),
                           magnitude_range=(50 * magnitude, 150 * magnitude),
                           mode=ctx.modes(), padding_mode="zeros")]


def _contrast(ctx: _Ctx, prob: float = 0.5, factor: float = 0.2) -> list[Any]:
    from monai.transforms import RandScaleIntensityFixedMeand

    return [RandScaleIntensityFixedMeand(keys="image", prob=prob, factors=factor)]


def _brightness(ctx: _Ctx, prob: float = 0.5, offset: float = 0.1) -> list[Any]:
    from monai.transforms import RandShiftIntensityd

    return [RandShiftIntensityd(keys="image", prob=prob, offsets=offset)]


def _gamma(ctx: _Ctx, prob: float = 0.3, low: float = 0.7, high: float = 1.5) -> list[Any]:
    from monai.transforms import RandAdjustContrastd

    return [RandAdjustContrastd(keys="image", prob=prob, gamma=(low, high))]


def _noise(ctx: _Ctx, prob: float = 0.2, std: float = 0.05) -> list[Any]:
    from monai.transforms import RandGaussianNoised

    return [RandGaussianNoised(keys="image", prob=prob, std=std)]


def _blur(ctx: _Ctx, prob: float = 0.2, sigma: float = 1.0) -> list[Any]:
    from monai.transforms import RandGaussianSmoothd

    s = (0.25 * sigma, sigma)
    return [RandGaussianSmoothd(keys="image", prob=prob, sigma_x=s, sigma_y=s, sigma_z=s)]


def _bias_field(ctx: _Ctx, prob: float = 0.3, coeff: float = 0.2) -> list[Any]:
    from monai.transforms import RandBiasFieldd

    return [RandBiasFieldd(keys="image", prob=prob, coeff_range=(0.0, coeff))]


OPS: dict[str, Callable[..., list[Any]]] = {
    "flip": _flip, "rotate": _rotate, "scale": _scale, "affine": _affine, "elastic": _elastic,
    "contrast": _contrast, "brightness": _brightness, "gamma": _gamma, "noise": _noise,
    "blur": _blur, "bias_field": _bias_field,
}


def list_ops() -> list[str]:
    """Names of every augmentation op."""
    return sorted(OPS)


def check_op(spec: dict[str, Any], index: int) -> tuple[str, dict[str, Any]]:
    """The op's name and options, checked against its factory's signature.

    Raises:
        ConfigError: for an unknown op (with "did you mean"), option or probability.
    """
    name = spec.get("name")
    where = f"data.augment.ops[{index}]"
    if name not in OPS:
        close = difflib.get_close_matches(str(name), OPS, n=2)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"{where}: unknown augmentation op {name!r}.{hint} "
                          f"Available: {', '.join(list_ops())}")
    params = list(inspect.signature(OPS[name]).parameters)[1:]
    options = {k: v for k, v in spec.items() if k != "name"}
    unknown = [k for k in options if k not in params]
    if unknown:
        raise ConfigError(f"{where} ({name}): unknown option(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(params)}")
    prob = options.get("prob", 0.5)
    if not isinstance(prob, (int, float)) or not 0 <= prob <= 1:
        raise ConfigError(f"{where} ({name}): prob must be between 0 and 1 (got {prob!r})")
    return str(name), options


def _op_transforms(spec: dict[str, Any], ctx: _Ctx, index: int) -> list[Any]:
    name, options = check_op(spec, index)
    try:
        return OPS[name](ctx, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"data.augment.ops[{index}] ({name}): invalid options {options} "
                          f"({exc})") from None


def resolve_ops(preset: str, ops: list[Any] | None) -> list[dict[str, Any]]:
    """The op list in effect: ``ops`` (PluginSpecs or dicts) when given, else the preset's."""
    if ops is not None:
        return [op.model_dump() if hasattr(op, "model_dump") else dict(op) for op in ops]
    if preset not in PRESETS:
        raise ConfigError(f"data.augment.preset {preset!r} is unknown; use one of "
                          f"{', '.join(PRESETS)}")
    return [dict(op) for op in PRESETS[preset]]


def build_augmentation(preset: str = "standard", ops: list[Any] | None = None, *,
                       spatial_dims: int, segmentation: bool = False,
                       spatial_size: list[int] | None = None, seed: int = 0,
                       patch: Any | None = None, fixed_size: bool = False,
                       source: str = "") -> Any | None:
    """A seeded MONAI ``Compose`` of random transforms, or ``None`` when there are none.

    With ``patch`` (``data.patch``, segmentation only) the chain starts by padding to the
    patch size and drawing ``samples_per_case`` random patches balanced between foreground
    and background (MONAI ``RandCropByPosNegLabeld``); the other ops then act on each patch,
    and the result is a list of dicts (collate with ``monai.data.list_data_collate``).

    Args:
        preset: ``none``, ``light``, ``standard`` or ``heavy``.
        ops: Explicit ``[{name, **options}]`` replacing the preset's ops.
        spatial_dims: 2 or 3.
        segmentation: Transform the ``label`` mask together with the image.
        spatial_size: Image size (sets translation in voxels and elastic grid spacing).
        seed: Seed of the random state.
        patch: ``data.patch`` (segmentation), or None.
        fixed_size: Every item the chain sees has ``spatial_size`` (the loader knows: one
            array, a resize or crop to one size, checked masks); geometric ops may then
            keep per-size work between items. Random patches always have the patch size.
        source: The image that set ``spatial_dims`` (named if the patch size does not fit).

    Raises:
        ConfigError: for an unknown op (with "did you mean"), option or probability.
    """
    from monai.transforms import Compose

    patch_size = list(patch.size) if patch is not None and patch.size else None
    ctx = _Ctx(spatial_dims, segmentation, patch_size or spatial_size,
               fixed_size=fixed_size or patch_size is not None)
    transforms: list[Any] = _patch_transforms(patch, spatial_dims, source) if patch_size else []
    for i, spec in enumerate(resolve_ops(preset, ops)):
        transforms += _op_transforms(spec, ctx, i)
    if not transforms:
        return None
    compose = Compose(transforms)
    compose.set_random_state(seed=seed % (2 ** 32))
    return compose


def _patch_transforms(patch: Any, spatial_dims: int, source: str = "") -> list[Any]:
    """Pad to the patch size, then draw foreground/background-balanced random patches
    (``source``: the image that set the dimensionality, named when the size does not fit)."""
    from medxfer.data.patches import PosNegPatches

    size = list(patch.size)
    if len(size) != spatial_dims:
        which = (f" (the first training case {source!r} is {spatial_dims}D; the images of one "
                 "dataset must all be 2D or all 3D)") if source else ""
        raise ConfigError(f"data.patch.size {size} needs {spatial_dims} values for "
                          f"{spatial_dims}D images{which}")
    if any(s < 1 for s in size):
        raise ConfigError(f"data.patch.size {size}: every side must be at least 1")
    pos = float(patch.pos_fraction)
    return [PadSmallerToPatch(keys=["image", "label"], spatial_size=size),
            CachedFgBgIndices(),
            PosNegPatches(keys=["image", "label"], label_key="label",
                          spatial_size=size, pos=pos, neg=1.0 - pos,
                          num_samples=int(patch.samples_per_case),
                          allow_smaller=False, fg_indices_key=CachedFgBgIndices.FG,
                          bg_indices_key=CachedFgBgIndices.BG)]


class PadSmallerToPatch:
    """MONAI ``SpatialPadd`` for the items smaller than the patch; larger ones pass as they
    are (the same values: MONAI's zero-width pad is a copy, a sixth of a 2D slice's
    per-item cost).

    Args:
        keys: The keys padded together (image and label).
        spatial_size: The patch size.
    """

    def __init__(self, keys: list[str], spatial_size: list[int]) -> None:
        from monai.transforms import SpatialPadd

        self.keys = list(keys)
        self.size = [int(s) for s in spatial_size]
        self.pad = SpatialPadd(keys=self.keys, spatial_size=self.size)

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if all(all(n >= s for n, s in zip(data[key].shape[1:], self.size))
               for key in self.keys if key in data):
            return data
        return self.pad(data)


class CachedFgBgIndices:
    """The foreground and background voxel indices of each item's (padded) label, found
    once by MONAI's ``FgBgToIndices`` and handed to ``RandCropByPosNegLabeld`` at every
    later patch draw of that item (MONAI's own recipe caches them the same way).

    The item is named by ``data[KEY]`` (its dataset index; :class:`CaseDataset` sets it);
    an item without one, or beyond ``budget_bytes`` of kept indices, has them found anew.
    The patches drawn are the same either way. The memo is per process and not pickled.

    Args:
        budget_bytes: The most index memory kept (int64 indices: 8 bytes a voxel).
    """

    KEY = "_item_index"
    FG = "_label_fg_indices"
    BG = "_label_bg_indices"

    def __init__(self, budget_bytes: int = 256 * 2 ** 20) -> None:
        from monai.transforms import FgBgToIndices

        self.budget_bytes = int(budget_bytes)
        self._find = FgBgToIndices()
        self._memo: dict[Any, tuple[Any, Any]] = {}
        self._used = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"budget_bytes": self.budget_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["budget_bytes"])  # type: ignore[misc]

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        data = dict(data)
        key = data.pop(self.KEY, None)
        indices = self._memo.get(key) if key is not None else None
        if indices is None:
            indices = self._find(data["label"])
            size = sum(int(getattr(i, "nbytes", 0)) for i in indices)
            if key is not None and self._used + size <= self.budget_bytes:
                self._memo[key] = indices
                self._used += size
        data[self.FG], data[self.BG] = indices
        return data
