"""Scanner-like distribution shifts: deterministic corruptions that make a shifted copy of
a dataset, for testing robustness and domain adaptation on data one already has.

Every corruption works on intensities scaled to [0, 1] (uint8 images are divided by 255,
other types min-max scaled per dataset and scaled back after) and is built from MONAI
transforms or plain arithmetic, with a fixed seed where randomness is involved, so the
same recipe always gives the same copy. A recipe is an ordered list of
``{name: ..., **params}``; :data:`CORRUPTIONS` lists the names with their parameters.

* ``contrast`` (``factor``): scale intensities about the image mean, ``(x - m) * f + m``:
  a different window/level or detector gain; ``f < 1`` flattens contrast.
* ``brightness`` (``offset``): add a constant: a different intensity offset.
* ``gamma`` (``gamma``): MONAI ``AdjustContrast``, ``x ** gamma``: a different
  non-linear detector response or display curve.
* ``blur`` (``sigma``, pixels): MONAI ``GaussianSmooth``: a softer reconstruction
  kernel or larger focal spot.
* ``noise`` (``std``): MONAI ``RandGaussianNoise`` with a fixed random state: a noisier
  (lower-dose) acquisition; different for every pixel and image, the same on every run.
* ``bias_field`` (``coeff``, ``degree``): MONAI ``RandBiasField`` with a fixed random state
  and ``coeff_range = (coeff, coeff)``: one smooth multiplicative field for the whole
  dataset, as a receive-coil inhomogeneity of one scanner.
* ``resolution`` (``factor``): downsample by ``factor`` (area averaging) and upsample back
  (bilinear/trilinear): a coarser acquisition matrix or thicker slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medxfer.errors import ConfigError


@dataclass(frozen=True)
class Corruption:
    """A named corruption: ``apply(images, rng_seed, **params)`` on ``[N, *spatial]`` in [0, 1]."""

    name: str
    params: dict[str, tuple[float, float | None]]  # parameter -> (default, exclusive minimum)
    apply: Callable[..., torch.Tensor]
    description: str


def _contrast(x: torch.Tensor, seed: int, factor: float) -> torch.Tensor:
    mean = x.flatten(1).mean(dim=1).reshape(-1, *([1] * (x.ndim - 1)))
    return (x - mean) * factor + mean


def _brightness(x: torch.Tensor, seed: int, offset: float) -> torch.Tensor:
    return x + offset


def _gamma(x: torch.Tensor, seed: int, gamma: float) -> torch.Tensor:
    from monai.transforms import AdjustContrast

    return torch.as_tensor(AdjustContrast(gamma=gamma)(x.clamp(0, 1)))


def _blur(x: torch.Tensor, seed: int, sigma: float) -> torch.Tensor:
    from monai.transforms import GaussianSmooth

    pad = max(1, math.ceil(3 * sigma))  # reflect-pad so that borders do not darken
    spatial = x.ndim - 1
    padded = torch.nn.functional.pad(x[None], [pad] * (2 * spatial), mode="reflect")[0] \
        if min(x.shape[1:]) > pad else x
    smooth = torch.as_tensor(GaussianSmooth(sigma=sigma)(padded))  # first axis: "channels"
    if smooth.shape == x.shape:
        return smooth
    return smooth[(slice(None), *[slice(pad, -pad)] * spatial)]


def _noise(x: torch.Tensor, seed: int, std: float) -> torch.Tensor:
    from monai.transforms import RandGaussianNoise

    noise = RandGaussianNoise(prob=1.0, std=std, sample_std=False)
    noise.set_random_state(seed)
    return torch.as_tensor(noise(x))


def _bias_field(x: torch.Tensor, seed: int, coeff: float, degree: float) -> torch.Tensor:
    from monai.transforms import RandBiasField

    field = RandBiasField(degree=int(degree), coeff_range=(coeff, coeff), prob=1.0)
    field.set_random_state(seed)
    return torch.as_tensor(field(x))


def _downsampled(spatial: tuple[int, ...], factor: float) -> list[int]:
    """The size ``resolution`` with ``factor`` downsamples images of size ``spatial`` to."""
    return [max(1, round(s / factor)) for s in spatial]


def _resolution(x: torch.Tensor, seed: int, factor: float) -> torch.Tensor:
    spatial = x.shape[1:]
    small = _downsampled(tuple(spatial), factor)
    batch = x[:, None].float()
    down = torch.nn.functional.interpolate(batch, size=small, mode="area")
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return torch.nn.functional.interpolate(down, size=list(spatial), mode=mode,
                                           align_corners=False)[:, 0]


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("contrast", {"factor": (0.6, 0.0)}, _contrast,
               "scale intensities about the image mean by factor"),
    Corruption("brightness", {"offset": (0.1, None)}, _brightness, "add offset"),
    Corruption("gamma", {"gamma": (1.5, 0.0)}, _gamma, "x ** gamma (MONAI AdjustContrast)"),
    Corruption("blur", {"sigma": (1.0, 0.0)}, _blur, "Gaussian blur, sigma in pixels "
               "(MONAI GaussianSmooth)"),
    Corruption("noise", {"std": (0.05, 0.0)}, _noise, "additive Gaussian noise "
               "(MONAI RandGaussianNoise, fixed seed)"),
    Corruption("bias_field", {"coeff": (0.3, 0.0), "degree": (3, 0.0)}, _bias_field,
               "one smooth multiplicative field (MONAI RandBiasField, fixed seed)"),
    Corruption("resolution", {"factor": (2.0, 0.0)}, _resolution,
               "downsample by factor and upsample back"),
)}


def parse_recipe(ops: Any, *, source: str = "recipe") -> list[dict[str, Any]]:
    """Check a recipe (a list of ``{name, **params}``), fill defaults, return it.

    Raises:
        ConfigError: naming the step, the unknown name or parameter, and the choices.
    """
    if not isinstance(ops, list) or not ops:
        raise ConfigError(f"{source}: expected a non-empty list of corruptions "
                          f"({{name: ..., **params}}); choose from {', '.join(CORRUPTIONS)}")
    steps = []
    for i, op in enumerate(ops):
        where = f"{source}[{i}]"
        if not isinstance(op, dict) or "name" not in op:
            raise ConfigError(f"{where}: expected {{name: ..., **params}}, got {op!r}")
        corruption = CORRUPTIONS.get(op["name"])
        if corruption is None:
            import difflib

            close = difflib.get_close_matches(str(op["name"]), CORRUPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown corruption {op['name']!r}{hint}; choose from "
                              f"{', '.join(CORRUPTIONS)}")
        params = {}
        for key, value in op.items():
            if key == "name":
                continue
            if key not in corruption.params:
                raise ConfigError(f"{where}.{key}: {corruption.name} takes "
                                  f"{', '.join(corruption.params)}")
            params[key] = value
        for key, (default, minimum) in corruption.params.items():
            value = params.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or (minimum is not None and value <= minimum):
                bound = f" > {minimum:g}" if minimum is not None else ""
                raise ConfigError(f"{where}.{key}: expected a number{bound}, got {value!r}")
            params[key] = float(value)
        steps.append({"name": corruption.name, **params})
    return steps


def parse_op(text: str) -> dict[str, Any]:
    """``NAME`` or ``NAME:key=value,key=value`` (values read as YAML numbers) as a step.

    Raises:
        ConfigError: for a malformed option.
    """
    import yaml

    name, _, rest = text.partition(":")
    step: dict[str, Any] = {"name": name.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--op {text!r}: expected NAME:param=value,... "
                              "(e.g. gamma:gamma=1.8)")
        if key.strip() in step:
            raise ConfigError(f"--op {text!r}: {key.strip()!r} is given twice")
        step[key.strip()] = yaml.safe_load(value)
    return step


def load_recipe(path: str | Path | None, ops: list[str]) -> tuple[list[dict[str, Any]], int]:
    """The steps and seed of a recipe file (``{seed, corruptions}``) plus ``--op`` steps.

    Raises:
        ConfigError: for a missing or malformed recipe, naming the file and key.
    """
    from medxfer.config import read_yaml

    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(path, what="recipe")
        unknown = set(raw) - {"seed", "corruptions", "description"}
        if unknown:
            raise ConfigError(f"recipe {str(path)!r}: unknown key(s) {', '.join(sorted(unknown))}"
                              "; allowed: seed, corruptions, description")
    steps = list(raw.get("corruptions") or []) + [parse_op(o) for o in ops]
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"recipe {str(path)!r}: seed must be an integer, got {seed!r}")
    source = f"recipe {str(path)!r} corruptions" if path is not None else "--op"
    return parse_recipe(steps, source=source), seed


def check_image_size(steps: list[dict[str, Any]], spatial: tuple[int, ...]) -> None:
    """Refuse steps that cannot work on images of size ``spatial``: a ``resolution`` factor
    that would downsample an axis of 2 or more pixels to a single pixel (the copy would be
    constant along it).

    Raises:
        ConfigError: naming the step, its factor, the image size and the largest factor.
    """
    for i, step in enumerate(steps):
        if step["name"] != "resolution":
            continue
        small = _downsampled(spatial, step["factor"])
        if any(n < 2 <= s for n, s in zip(small, spatial)):
            size = "x".join(str(s) for s in spatial)
            halves = min(s for s in spatial if s >= 2) / 2
            raise ConfigError(f"corruption {i} (resolution): factor {step['factor']:g} "
                              f"downsamples the {size} images to "
                              f"{'x'.join(str(n) for n in small)}, fewer than 2 pixels along "
                              f"an axis, and would make them flat; use a smaller factor "
                              f"({halves:g} leaves 2)")


def apply_recipe(images: np.ndarray, steps: list[dict[str, Any]], *, spatial_dims: int,
                 seed: int = 0, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Apply a parsed recipe to images ``[..., *spatial]`` (channels first, if any).

    Args:
        images: The images, any numeric dtype; the result has the same dtype and shape.
        spatial_dims: 2 or 3: how many trailing axes are spatial.
        steps: What :func:`parse_recipe` returned.
        seed: Seed of the random corruptions (step ``i`` uses ``seed + i``).
        value_range: The intensity range mapped to [0, 1]; default: 0-255 for uint8,
            the data's min and max otherwise.

    Returns:
        The shifted images, clipped to the value range.

    Raises:
        ConfigError: when a step cannot work on images of this size (see
            :func:`check_image_size`).
    """
    check_image_size(steps, tuple(images.shape[images.ndim - spatial_dims:]))
    dtype = images.dtype
    if value_range is None:
        value_range = (0.0, 255.0) if dtype == np.uint8 else \
            (float(images.min(initial=0.0)), float(images.max(initial=1.0)))
    lo, hi = value_range
    scale = (hi - lo) or 1.0
    x = torch.from_numpy((images.astype(np.float32) - lo) / scale)
    shape = x.shape
    x = x.reshape(-1, *shape[len(shape) - spatial_dims:])  # each image is one "channel"
    for i, step in enumerate(steps):
        params = {k: v for k, v in step.items() if k != "name"}
        x = CORRUPTIONS[step["name"]].apply(x.float(), seed + i, **params).float().clamp(0, 1)
    out = x.reshape(shape).numpy() * scale + lo
    if np.issubdtype(dtype, np.integer):
        out = np.rint(out)
    return out.astype(dtype)


def shift_medmnist(source: str | Path, output: str | Path, steps: list[dict[str, Any]], *,
                   seed: int = 0) -> Path:
    """Write a shifted copy of a MedMNIST ``.npz``: every split's images corrupted by the
    recipe, labels unchanged, the recipe stored as JSON under ``shift_recipe`` (with the
    source's own recipe under ``applied_after`` when the source is a shifted copy).

    The copy is written to a temporary name beside ``output`` and renamed into place.

    Raises:
        DataError: when ``source`` is not a readable MedMNIST file or ``output`` exists.
    """
    import json

    from medxfer.data.medmnist import _spatial_dims, read_npz
    from medxfer.errors import DataError
    from medxfer.io import atomic_open

    source, output = Path(source), Path(output)
    if output.exists():
        raise DataError(f"{str(output)!r} already exists; choose another --output "
                        "(shifted copies never overwrite a file)")
    arrays = read_npz(source)
    if "train_images" not in arrays:
        raise DataError(f"{str(source)!r} is not a MedMNIST file: it has no train_images")
    dims = _spatial_dims(source.name, arrays["train_images"])
    out = dict(arrays)
    for key, images in arrays.items():
        if not key.endswith("_images"):
            continue
        rgb = images.ndim == dims + 2 and images.shape[-1] in (1, 3)
        chw = np.moveaxis(images, -1, 1) if rgb else images
        shifted = apply_recipe(chw, steps, spatial_dims=dims, seed=seed)
        out[key] = np.moveaxis(shifted, 1, -1) if rgb else shifted
    recipe: dict[str, Any] = {"seed": seed, "corruptions": steps}
    if "shift_recipe" in arrays:  # a shifted copy of a shifted copy: keep the first recipe
        recipe["applied_after"] = json.loads(str(arrays["shift_recipe"]))
    out["shift_recipe"] = np.array(json.dumps(recipe))
    with atomic_open(output, "wb") as handle:
        np.savez_compressed(handle, **out)
    return output
