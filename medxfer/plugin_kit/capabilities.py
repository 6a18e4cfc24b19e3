"""What a backbone can do, declared as data when it is registered.

A backbone plugin passes ``capabilities=BackboneCapabilities(...)`` (or a dict of the same
fields) to ``register``. The registry keeps it on the entry; the core asks the registry,
not a list of names, which backbones build 3D networks, and ``medxfer plugins --json``
prints it with the named weights that are on this machine now. The contract tests build
every registered backbone at its declared minimum size in each declared dimensionality.

Modelled on timm's ``pretrained_cfg``: the weights of a named source are described by the
files a library publishes (file names, a Hugging Face hub id), so that they can be looked
for offline without importing the library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

#: What a backbone factory returns: pooled features for classification and regression
#: (a :class:`medxfer.models.Backbone`), or a whole segmentation network
#: (a :class:`medxfer.models.SegmentationModel`; its factory takes ``num_classes``).
OUTPUT_KINDS = ("features", "segmentation")
#: ``pretrained`` values that are not named weights: random initialisation, a weights file
#: the user names, an earlier medxfer run folder.
USER_SOURCES = ("none", "file", "run")


@dataclass(frozen=True)
class WeightFiles:
    """Where the weights of one named source (``imagenet``, ``medicalnet``...) are looked for.

    Attributes:
        file_names: The library's own file names, looked for in the weights cache folders
            and in installed offline-weights packages.
        hf_hub_id: A Hugging Face hub model id whose cached ``hf_file_name`` also counts.
        hf_file_name: The file of ``hf_hub_id`` that holds the weights.
    """

    file_names: tuple[str, ...] = ()
    hf_hub_id: str | None = None
    hf_file_name: str = "model.safetensors"

    def __post_init__(self) -> None:
        if isinstance(self.file_names, str):
            object.__setattr__(self, "file_names", (self.file_names,))
        else:
            object.__setattr__(self, "file_names", tuple(self.file_names))
        if not self.file_names and not self.hf_hub_id:
            raise ValueError("WeightFiles needs file_names or an hf_hub_id")

    def local_copy(self) -> Path | None:
        """A copy on this machine (cache folder, offline package, hub cache), or ``None``.

        Looks by file name only: nothing is downloaded, read or imported.
        """
        from medxfer.weights_lookup import find_local_weights

        return find_local_weights(self.file_names, hf_hub_id=self.hf_hub_id,
                                  hf_file_name=self.hf_file_name)


@dataclass(frozen=True)
class BackboneCapabilities:
    """What a backbone builds and which weights it takes, for its default options.

    Attributes:
        spatial_dims: The image dimensionalities it builds networks for (2, 3).
        min_input_size: The smallest side, in pixels or voxels, of a square or cubic input
            it takes in training (batches of two); 1 for any size.
        input_multiple: Every input side must be a multiple of this (segmentation networks
            that halve the resolution several times); 1 for any size.
        output: ``features`` (classification and regression) or ``segmentation``; by
            default what the factory's signature says (a segmentation factory takes
            ``num_classes``).
        pretrained: The ``pretrained`` values it accepts: ``none``, ``file``, ``run`` and
            the names of weights it finds itself (``imagenet``, ``medicalnet``).
        weights: Named source -> the files it is loaded from, to tell whether it is on this
            machine. A named source without an entry is reported as not checked.
    """

    spatial_dims: tuple[int, ...] = (2,)
    min_input_size: int = 1
    input_multiple: int = 1
    output: str | None = None
    pretrained: tuple[str, ...] = USER_SOURCES
    weights: Mapping[str, WeightFiles] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = tuple(sorted({int(d) for d in self.spatial_dims}))
        if not dims or any(d not in (2, 3) for d in dims):
            raise ValueError(f"spatial_dims must be 2 and/or 3, got {self.spatial_dims!r}")
        for name in ("min_input_size", "input_multiple"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {', '.join(OUTPUT_KINDS)}, "
                             f"got {self.output!r}")
        pretrained = (self.pretrained,) if isinstance(self.pretrained, str) \
            else tuple(self.pretrained)
        weights = {str(k): v if isinstance(v, WeightFiles) else WeightFiles(**v)
                   for k, v in dict(self.weights).items()}
        unknown = sorted(set(weights) - set(pretrained))
        if unknown:
            raise ValueError(f"weights names {', '.join(unknown)}, which pretrained does not "
                             "list")
        object.__setattr__(self, "spatial_dims", dims)
        object.__setattr__(self, "pretrained", pretrained)
        object.__setattr__(self, "weights", weights)

    @classmethod
    def from_value(cls, value: BackboneCapabilities | Mapping[str, Any]) -> BackboneCapabilities:
        """``value`` itself, or the capabilities a dict of the same fields describes.

        Raises:
            ValueError: for an unknown field or a value out of range.
            TypeError: for something that is neither.
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"capabilities must be a BackboneCapabilities or a dict, got "
                            f"{type(value).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown capabilities {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(known))}")
        return cls(**value)

    def builds(self, spatial_dims: int) -> bool:
        """Whether it builds ``spatial_dims``-D networks."""
        return spatial_dims in self.spatial_dims

    def offline(self) -> dict[str, bool | None]:
        """For each named source it accepts (not ``none``, ``file``, ``run``): whether its
        weights are on this machine now (``None``: no files declared, so not checked).

        Nothing is downloaded or imported; see :meth:`WeightFiles.local_copy`.
        """
        found: dict[str, bool | None] = {}
        for source in self.pretrained:
            if source in USER_SOURCES:
                continue
            files = self.weights.get(source)
            found[source] = None if files is None else files.local_copy() is not None
        return found

    def to_json(self, *, check_offline: bool = True) -> dict[str, Any]:
        """The capabilities as JSON-ready data, with :meth:`offline` when asked."""
        data = asdict(self)
        data["spatial_dims"] = list(self.spatial_dims)
        data["pretrained"] = list(self.pretrained)
        data["weights"] = {k: {**asdict(v), "file_names": list(v.file_names)}
                           for k, v in self.weights.items()}
        if check_offline:
            data["offline"] = self.offline()
        return data

    def summary(self, offline: Mapping[str, bool | None] | None = None) -> str:
        """One short line for a table, e.g. ``2D, >=29 px, features, imagenet weights here``.

        Args:
            offline: What :meth:`offline` found, to say which named weights are here;
                ``None`` leaves that out.
        """
        dims = "/".join(f"{d}D" for d in self.spatial_dims)
        size = f">={self.min_input_size} px" if self.min_input_size > 1 else "any size"
        if self.input_multiple > 1:
            size += f", x{self.input_multiple}"
        parts = [dims, size, self.output or "?"]
        here = [source for source, found in (offline or {}).items() if found]
        if here:
            parts.append(f"{'/'.join(here)} weights here")
        elif offline:
            parts.append(f"no {'/'.join(offline)} weights here")
        return ", ".join(parts)
