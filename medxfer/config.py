"""One typed run config: YAML in, validated with pydantic, resolved YAML out.

Every pluggable part is a :class:`PluginSpec` (``{name: ..., **kwargs}``) whose extra keys
go straight to the plugin's factory. Everything else is strict: an unknown key, a wrong
type or a value outside the allowed choices fails validation with a message naming the
key. Nothing in a config is ever evaluated as code.
"""

from __future__ import annotations

import copy
import os
import reprlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from medxfer.bounded_yaml import MAX_BYTES, MAX_DEPTH, describe_yaml_error, load_yaml
from medxfer.errors import ConfigError
from medxfer.io import atomic_write_text
from medxfer.memory_size import parse_memory

RESOLVED_CONFIG_NAME = "config.yaml"


#: A layer width: a whole number above 0 (strict, so ``true`` is not read as 1).
Width = Annotated[int, Field(strict=True, gt=0)]


class StrictModel(BaseModel):
    """A config section that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginSpec(BaseModel):
    """A pluggable part: ``name`` picks the registered plugin, other keys are its options."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="registered plugin name (see `medxfer plugins`)")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options passed to the plugin's factory."""
        return dict(self.model_extra or {})


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------


#: ``data.format``: ``auto`` or a layout of :mod:`medxfer.data.layouts` (the names of
#: :data:`medxfer.data.datalist.FORMATS`; the first six were the only ones before).
DataLayout = Literal["auto", "folder", "manifest", "medmnist", "msd", "dicom", "images_masks",
                     "nnunet", "monai_datalist", "images", "packed"]


class SplitConfig(StrictModel):
    """How cases are divided into train, validation and test."""

    val_fraction: float = Field(0.15, ge=0.0, lt=1.0,
                                description="share of cases for validation when the data has no split")
    test_fraction: float = Field(0.15, ge=0.0, lt=1.0,
                                 description="share of cases for test when the data has no split")
    seed: int = Field(0, description="seed of the split (independent of the training seed)")
    stratify: bool = Field(True, description="keep class proportions in every split (classification)")
    group_by: str | None = Field(
        "patient_id",
        description="manifest column whose values never cross splits (patient-level split)")
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation: number of folds")
    fold: int | None = Field(None, ge=0, description="which fold is the validation fold (also "
                             "of a MONAI datalist's fold keys; default 0)")
    use_existing: bool = Field(
        True, description="use the split stored in the data when it has one (a manifest's "
        "split column, split folders, a datalist's lists or fold keys, MedMNIST's arrays); "
        "splits it lacks are drawn from its training cases")
    file: str | None = Field(
        None, description="CSV (id,split) or JSON ({split: [ids]}) fixing every case's split "
        "(relative to the config file; with --set, to the current folder); overrides the "
        "fractions")


class PreprocessConfig(StrictModel):
    """Deterministic preprocessing (MONAI transforms), applied in training and evaluation."""

    image_size: list[int] | None = Field(
        None, description="resize (2D: [H, W]; 3D: [D, H, W]) after cropping; null keeps the size")
    spacing: list[float] | None = Field(None, description="resample to this voxel spacing in mm")
    crop_size: list[int] | None = Field(
        None, description="centre-crop or zero-pad to this size before resizing; null keeps it")
    orientation: str | None = Field("RAS", description="reorient 3D volumes to this axis code")
    intensity: Literal["auto", "zscore", "percentile", "ct_window", "minmax", "none"] = Field(
        "auto", description="intensity normalisation: auto picks by modality")
    ct_window: list[float] = Field([-1000.0, 400.0], description="HU window for ct_window")
    percentiles: list[float] = Field([0.5, 99.5], description="percentiles for percentile")
    channels: Literal["auto", "grey", "rgb"] = Field(
        "auto", description="auto: 3 channels when the backbone's weights expect RGB")
    imagenet_norm: Literal["auto", "on", "off"] = Field(
        "auto", description="ImageNet mean/std when the source weights were trained on ImageNet")


class AugmentConfig(StrictModel):
    """Training-time augmentation: a named preset, optionally replaced by an explicit list."""

    preset: Literal["none", "light", "standard", "heavy"] = Field(
        "standard", description="named augmentation preset")
    ops: list[PluginSpec] | None = Field(
        None, description="explicit list of {name, **options} that replaces the preset's ops")


class PatchConfig(StrictModel):
    """Patch-based segmentation training: random crops balanced between foreground and
    background (MONAI ``RandCropByPosNegLabeld``), taken after augmentation."""

    size: list[int] | None = Field(
        None, description="training patch size (null: train on whole images)")
    samples_per_case: int = Field(2, ge=1, description="patches drawn from each case per epoch")
    pos_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of patches centred on foreground")


class TargetConfig(StrictModel):
    """Target-domain data for domain adaptation (another scanner or hospital).

    It is read and preprocessed like the source (``data.preprocess``); its train split feeds
    the domain-adaptation method without labels, its test split is evaluated beside the
    source's test split. Its labels are never used for training unless ``labelled`` is true.
    """

    path: str = Field(description="target dataset file or folder (relative to the config file; "
                      "with --set, to the current folder)")
    format: DataLayout = Field(
        "auto", description="target dataset layout (as data.format); auto detects it from "
        "the path")
    labelled: bool = Field(
        False, description="pass the target training labels to the domain-adaptation plugin "
        "(semi-supervised); false: target batches carry images only")
    limit: int | None = Field(None, ge=1, description="use at most this many target cases per split")


class DataConfig(StrictModel):
    """Where the data is and how it becomes tensors."""

    format: DataLayout = Field(
        "auto", description="dataset layout: auto recognises it, and refuses a path that fits "
        "two layouts, naming both; folder (a sub-folder per class, optionally in train/ val/ "
        "test/; masks beside the images, NAME_mask.png, make it segmentation), images (a "
        "folder of images), images_masks (images/ + masks/), manifest (CSV/JSON rows), "
        "monai_datalist (training/validation/testing lists), msd (imagesTr/ + labelsTr/), "
        "nnunet (imagesTr/CASE_0000 + labelsTr/, dataset.json), medmnist (.npz), dicom "
        "(series folders), packed (a `medxfer data pack` folder). `medxfer data inspect PATH` "
        "shows which is recognised")
    path: str | None = Field(
        None, description="dataset file or folder (relative to the config file; with --set, to "
        "the current folder); null: the embedded sample data for the task")
    classes: list[str] | None = Field(None, description="class names, in label order")
    image_key: str = Field("image", description="manifest column of image paths")
    label_key: str = Field("label", description="manifest column of labels or mask paths")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    patch: PatchConfig = Field(default_factory=PatchConfig)
    slice_axis: int | None = Field(
        None, ge=0, le=2, description="segmentation of 3D volumes with a 2D network: train on "
        "the slices along this axis (after orientation; 2 is axial for RAS); validation and "
        "test predict every slice and score the reassembled volume")
    cache: Literal["auto", "none", "memory", "disk"] = Field(
        "auto", description="where preprocessed cases are kept between epochs: auto: in "
        "memory up to data.cache_memory (train, then validation, then test), the rest on "
        "disk in the run folder's cache/ (or preprocessed again each time when its disk is "
        "full), images stored as uint8/int16 where that loses nothing; memory: every case in "
        "memory (MONAI CacheDataset); disk: every case on disk (PersistentDataset); none: "
        "preprocess every case each time it is read")
    cache_memory: str | float | None = Field(
        None, description="data.cache: auto: memory the cache may hold, in bytes with a unit "
        "(8GB, 512MiB) or as a share of the memory available when the run starts (0.3); "
        "null: 0.5; a distributed run divides it between its processes on each machine")
    num_workers: int = Field(0, ge=0, description="data-loader worker processes")
    loader: Literal["torch", "thread"] = Field(
        "torch", description="training loader: torch's DataLoader, or MONAI's ThreadDataLoader "
        "(prepares the next batches in a background thread while the model trains)")
    prefetch: int = Field(2, ge=1, description="batches a thread loader prepares ahead")
    shard_order: bool = Field(
        False, description="packed data only (`medxfer data pack`): each training epoch visits "
        "the shards in a seeded random order and the cases of each shard in a random order, "
        "so a slow disk reads one shard at a time; with several processes each takes whole "
        "shards. Another order than the default shuffle, so results differ from it")
    augment_on: Literal["cpu", "device", "batch"] = Field(
        "cpu", description="how training augmentation runs: cpu: MONAI transforms item by "
        "item in the loader; device: the same on the training GPU after the cache, in a thread "
        "loader (MONAI's fast-training recipe; needs num_workers 0; the same as cpu when "
        "training on a CPU); batch: the ops act on each collated batch at once, vectorised, on "
        "the training device (a GPU with num_workers 0, else in the loader), for flip, rotate, "
        "scale, affine, contrast, brightness, gamma and noise")
    limit: int | None = Field(None, ge=1, description="use at most this many cases per split")
    target: TargetConfig | None = Field(
        None, description="target-domain data for domain adaptation and evaluation "
        "(null: none)")

    @field_validator("cache_memory")
    @classmethod
    def _memory_size(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            try:
                parse_memory(value)
            except ConfigError as exc:
                raise ValueError(str(exc).split(": ", 1)[1]) from None
        return value


# ---------------------------------------------------------------------------------------
# model, training, evaluation
# ---------------------------------------------------------------------------------------


class HeadConfig(StrictModel):
    """The task head the core builds on top of the backbone."""

    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="dropout before the last layer")
    hidden: Width | list[Width] | None = Field(
        None, description="width of an optional hidden layer, or a list of widths for several "
        "(each a linear layer and a ReLU)")


class BackboneSpec(PluginSpec):
    """The backbone plugin and its options, plus ``to_3d``, which the core itself reads."""

    to_3d: Literal["acs", "i3d", "2.5d"] | None = Field(
        None, description="3D data only: build the backbone's 2D network (with its weights) "
        "and convert it: acs (ACS convolutions), i3d (inflated kernels) or 2.5d (2D network "
        "on every slice); see docs/transfer-3d.md")

    @model_serializer(mode="wrap")
    def _omit_unset_to_3d(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("to_3d") is None:  # most configs: keep their resolved YAML as it was
            data.pop("to_3d", None)
        return data


class BatchRenormConfig(StrictModel):
    """Batch renormalisation (Ioffe 2017) in place of the backbone's batch norms."""

    r_max: float = Field(3.0, ge=1.0, description="largest correction r of the batch's "
                         "standard deviation towards the running one (1: batch norm)")
    d_max: float = Field(5.0, ge=0.0, description="largest correction d of the batch's mean "
                         "towards the running one, in running standard deviations (0: none)")


class ModelConfig(StrictModel):
    """The network: a registered backbone plus a task head."""

    backbone: BackboneSpec = Field(
        default_factory=lambda: BackboneSpec(name="mobilenet_v2", pretrained="imagenet"),
        description="backbone plugin and its options (e.g. pretrained: imagenet | none | PATH; "
        "to_3d: acs | i3d | 2.5d to turn a 2D backbone into a 3D one)")
    head: HeadConfig = Field(default_factory=HeadConfig)
    batch_renorm: bool | BatchRenormConfig = Field(
        False, description="fine-tune with batch renormalisation: the backbone's batch norms "
        "become BatchRenorm layers keeping their pretrained statistics (true, or {r_max, "
        "d_max})")


class OptimizerConfig(StrictModel):
    """Optimizer settings."""

    name: Literal["adamw", "sgd"] = Field("adamw", description="optimizer")
    lr: float = Field(1e-3, gt=0, description="base learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="weight decay")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")


class SchedulerConfig(StrictModel):
    """Learning-rate schedule."""

    name: Literal["cosine", "onecycle", "constant"] = Field("cosine", description="schedule")
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up length (cosine)")


class EarlyStoppingConfig(StrictModel):
    """Best-checkpoint selection and early stopping on a validation metric."""

    metric: str = Field("auto", description="validation metric to monitor; auto picks by task")
    patience: int | None = Field(None, ge=1, description="epochs without improvement before stopping")
    select: Literal["best", "last"] = Field(
        "best", description="the weights the run keeps and delivers: best (the epoch with the "
        "best validation metric) or last (the final epoch, e.g. at the end of a cosine "
        "schedule, when the validation set is too small to pick an epoch reliably; the "
        "metric is still computed and logged)")

    @model_validator(mode="after")
    def _check_select(self) -> EarlyStoppingConfig:
        if self.select == "last" and self.patience is not None:
            raise ValueError("patience stops training when the metric "
                             "stalls, select: last keeps the final epoch whatever the metric; "
                             "set one of them (patience: null, or select: best)")
        return self


class DDPConfig(StrictModel):
    """Gradient synchronisation of distributed runs (``medxfer run --nproc N``): the
    options of torch's ``DistributedDataParallel``. Single-process runs ignore them."""

    bucket_cap_mb: float = Field(
        25.0, gt=0, description="MiB of gradients all-reduced together: each bucket's "
        "all-reduce starts as soon as the backward pass has filled it, overlapping the rest "
        "of the backward (25: torch's default)")
    gradient_as_bucket_view: bool = Field(
        False, description="the gradients are views into the all-reduce buckets instead of "
        "separate tensors: one copy of the gradients less in memory (no faster on CPU, "
        "docs/performance.md)")
    static_graph: bool = Field(
        False, description="promise that every step uses the same parameters in the same "
        "way, so DDP stops searching each step's graph for unused parameters; refused with "
        "a strategy that changes which parameters train during the run (gradual_unfreeze)")


class TrainConfig(StrictModel):
    """The training loop."""

    epochs: int = Field(5, ge=1, description="number of epochs")
    batch_size: int = Field(32, ge=1, description="batch size")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    imbalance: Literal["none", "class_weights", "balanced_sampler"] = Field(
        "none", description="how to treat imbalanced classes")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    amp: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="mixed precision: fp16 (CUDA, GradScaler) or bf16 (CUDA or CPU); "
        "off: fp32 (TF32 tensor cores on CUDA); auto: on CUDA the fastest of fp32, bf16 and "
        "fp16 (fp16 only when 5% faster than both) for this GPU and network, from a few "
        "timed training steps cached in $MEDXFER_PRECISION_CACHE (default "
        "$XDG_CACHE_HOME/medxfer/precision_probe.json); fp32 on CPU")
    compile: bool | Literal["default", "cudagraphs"] = Field(
        False, description="torch.compile the network: true or default (torch's default "
        "mode), cudagraphs (mode reduce-overhead: CUDA graphs replay each step's kernels at "
        "once, for small launch-bound steps; CUDA only), false (eager)")
    channels_last: bool = Field(
        False, description="channels-last memory format (channels_last_3d for 3D networks)")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this value")
    time_limit: float | None = Field(
        None, gt=0, description="seconds training (with its validation) may take: after each "
        "epoch the epochs are lowered, never raised, to what fits in the time left at the pace "
        "so far, and the learning-rate schedule follows (null: no limit); raised only up to "
        "train.max_epochs")
    max_epochs: int | None = Field(
        None, ge=1, description="with train.time_limit: when the epochs run faster than "
        "planned, the epochs may be raised to what fits in the time left, up to this many; "
        "raised only in the first half of training, while the learning rate is still high "
        "(null: never raised)")
    ema: float | None = Field(
        None, gt=0, lt=1, description="exponential moving average of the weights with this "
        "decay per step (e.g. 0.99); validation, the best checkpoint and the delivered model "
        "then use the average (null: off)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    seed: int = Field(0, description="training seed")
    deterministic: bool = Field(True, description="deterministic algorithms where possible")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (null: default)")
    sync_batchnorm: bool = Field(
        False, description="distributed runs on CUDA: batch norm over the global batch "
        "(SyncBatchNorm) instead of each process's share")
    ddp: DDPConfig = Field(
        default_factory=DDPConfig, description="distributed runs (--nproc): how DDP "
        "synchronises the gradients (docs/distributed.md)")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare off as false

    @field_validator("compile", mode="before")
    @classmethod
    def _known_compile(cls, value: Any) -> Any:
        words = {"default", "cudagraphs", "true", "false", "yes", "no", "on", "off", "1", "0"}
        if isinstance(value, str) and value.strip().lower() not in words:
            raise ValueError("give false, true, default or cudagraphs")
        return value

    @model_validator(mode="after")
    def _check_max_epochs(self) -> TrainConfig:
        if self.max_epochs is None:
            return self
        if self.time_limit is None:
            raise ValueError("train.max_epochs raises the epochs to fill train.time_limit; "
                             "give train.time_limit (seconds) too, or leave max_epochs out")
        if self.max_epochs < self.epochs:
            raise ValueError(f"train.max_epochs ({self.max_epochs}) is below train.epochs "
                             f"({self.epochs}); give at least {self.epochs}, or leave it out")
        return self

    @model_validator(mode="after")
    def _check_compile(self) -> TrainConfig:
        if self.compile == "cudagraphs" and self.device.strip().lower().startswith("cpu"):
            raise ValueError("train.compile: cudagraphs needs a CUDA device but train.device "
                             "is cpu; use train.compile: true (or false) on the CPU, or "
                             "train.device: cuda")
        return self


class LossConfig(StrictModel):
    """The combined loss ``L_total = alpha * L_pre + beta * L_new``."""

    alpha: float = Field(1.0, ge=0, description="weight of the knowledge-retention term L_pre")
    beta: float = Field(1.0, ge=0, description="weight of the task loss L_new")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="classification label smoothing")
    name: Literal["auto", "ce", "dice", "dice_ce", "dice_focal", "tversky"] = Field(
        "auto", description="task loss L_new: auto is ce (classification) or dice_ce "
        "(segmentation); dice, dice_ce, dice_focal, tversky are MONAI's losses")
    include_background: bool = Field(
        False, description="segmentation: count the background class in Dice-type losses")
    tversky_alpha: float = Field(0.3, ge=0, description="tversky: weight of false positives")
    tversky_beta: float = Field(0.7, ge=0, description="tversky: weight of false negatives")
    focal_gamma: float = Field(2.0, ge=0, description="dice_focal: focusing parameter")


class SlidingWindowConfig(StrictModel):
    """MONAI sliding-window inference for segmentation (validation, test and predict)."""

    roi_size: list[int] | None = Field(
        None, description="window size (null: data.patch.size, or whole images when unset)")
    overlap: float = Field(0.5, ge=0.0, lt=1.0, description="overlap of neighbouring windows")
    mode: Literal["gaussian", "constant"] = Field(
        "gaussian", description="blending of overlapping windows")
    batch_size: int = Field(4, ge=1, description="windows per forward pass")


class EvalConfig(StrictModel):
    """Final evaluation."""

    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% CIs (0: off)")
    threshold: Literal["val_youden", "val_f1", "val_accuracy", "val_accuracy_1se",
                       "fixed"] = Field(
        "val_youden", description="binary decision threshold, chosen on validation only: "
        "maximising Youden's J, F1 or accuracy; val_accuracy_1se: of the thresholds within "
        "one standard error of the best validation accuracy, the one nearest 0.5; or fixed")
    fixed_threshold: float = Field(0.5, gt=0, lt=1, description="threshold when threshold: fixed")
    tta: Literal["none", "flip"] = Field(
        "none", description="test-time augmentation (classification and regression): flip "
        "averages the predictions of the image and its flips along eval.tta_axes, in "
        "validation, test, predict, ensembles and exported models")
    tta_axes: list[int] | None = Field(
        None, description="spatial axes flipped by eval.tta: flip, every combination of them "
        "(null: the left-right axis, as the flip augmentation: 2D width, 3D first axis)")
    sliding_window: SlidingWindowConfig = Field(default_factory=SlidingWindowConfig)


class EnsembleConfig(StrictModel):
    """A deep ensemble trained by one run: several networks, their outputs averaged."""

    members: int = Field(
        1, ge=1, le=32, description="networks to train, member k with seed train.seed * members "
        "+ k; their class probabilities (regression: outputs) are averaged (1: one network)")
    time_limit: float | None = Field(
        None, gt=0, description="seconds the members may take together: they are trained "
        "in turn while the next one fits in the time left at the mean time of those before "
        "(at least one is trained; each member's train.time_limit is at most the time "
        "left), so `members` is the most; the ensemble is of the members trained (null: "
        "every member)")


class RunConfig(StrictModel):
    """A complete medxfer run."""

    task: Literal["classification", "regression", "segmentation"] = Field(
        "classification", description="what the model predicts")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    strategy: PluginSpec = Field(
        default_factory=lambda: PluginSpec(name="full_finetune"),
        description="transfer strategy plugin and its options")
    domain_adaptation: PluginSpec | None = Field(
        None, description="domain-adaptation plugin and its options (null: none)")
    train: TrainConfig = Field(default_factory=TrainConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    tracking: list[PluginSpec] = Field(
        default_factory=lambda: [PluginSpec(name="tensorboard")],
        description="run-tracking loggers, each {name, **options}: tensorboard (the run's "
        "tensorboard/ folder), mlflow (tracking_uri, experiment; pip install "
        "'medxfer[mlflow]'); [] logs nothing")

    @model_validator(mode="after")
    def _check_fold(self) -> RunConfig:
        split = self.data.split
        # fold without folds picks a fold the data stores (a MONAI datalist's fold keys);
        # the data loading refuses it for data without them
        if split.fold is not None and split.folds is not None and split.fold >= split.folds:
            raise ValueError("data.split.fold needs data.split.folds > fold")
        return self

    @model_validator(mode="after")
    def _check_regression_options(self) -> RunConfig:
        if self.task != "regression":
            return self
        unused = []
        if self.loss.name != "auto":
            unused.append(f"loss.name {self.loss.name!r} (regression trains with mean squared "
                          "error: leave it auto)")
        if self.loss.label_smoothing:
            unused.append("loss.label_smoothing (classification only: set it to 0)")
        if self.train.imbalance != "none":
            unused.append(f"train.imbalance {self.train.imbalance!r} (classes only: none)")
        if self.data.classes is not None:
            unused.append("data.classes (regression targets are numbers: null)")
        default = EvalConfig()  # a resolved config spells the defaults out: those are fine
        if self.eval.threshold != default.threshold or \
                self.eval.fixed_threshold != default.fixed_threshold:
            unused.append("eval.threshold / eval.fixed_threshold (binary classification only: "
                          "remove them)")
        if unused:
            raise ValueError("task regression does not use " + "; ".join(unused))
        return self

    @model_validator(mode="after")
    def _check_ensemble(self) -> RunConfig:
        if self.ensemble.members == 1:
            if self.ensemble.time_limit is not None:
                raise ValueError("ensemble.time_limit fits the members of an ensemble into "
                                 "a time; with ensemble.members 1 use train.time_limit")
            return self
        if self.task == "segmentation":
            raise ValueError("ensemble.members > 1 trains classification and regression "
                             "ensembles; for segmentation train the runs apart and combine "
                             "them with `medxfer ensemble --runs ...`")
        if self.domain_adaptation is not None:
            raise ValueError("ensemble.members > 1 cannot be combined with domain_adaptation "
                             "yet; train the runs apart and combine them with `medxfer "
                             "ensemble --runs ...`")
        return self

    def trains_on_patches(self) -> bool:
        """Whether training draws patches (``data.patch.size`` of a segmentation run)."""
        return self.task == "segmentation" and bool(self.data.patch.size)

    def patches_per_case(self) -> int:
        """Training patches each case gives per draw: ``data.patch.samples_per_case`` when a
        segmentation run trains on patches, else 1. ``train.batch_size`` counts patches."""
        if self.trains_on_patches():
            return int(self.data.patch.samples_per_case)
        return 1

    def plugin_specs(self) -> dict[str, tuple[str, PluginSpec]]:
        """Config key -> (plugin kind, spec) for every pluggable part that is set."""
        specs = {"model.backbone": ("backbone", self.model.backbone),
                 "strategy": ("strategy", self.strategy)}
        if self.domain_adaptation is not None:
            specs["domain_adaptation"] = ("domain_adaptation", self.domain_adaptation)
        for index, spec in enumerate(self.tracking):
            specs[f"tracking[{index}]"] = ("logger", spec)
        return specs


# ---------------------------------------------------------------------------------------
# loading, overrides, writing
# ---------------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into ``(["a", "b"], value)``; the value is read as YAML (no code).

    Raises:
        ConfigError: when ``text`` has no ``=``, an empty or overlong key, or a value past
            the bounds of :mod:`medxfer.bounded_yaml`.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. train.epochs=3")
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(f"--set: the key {_SHORT.repr(key)} has more than {MAX_DEPTH} parts; "
                          "config keys have a few (train.optimizer.lr)")
    try:
        value = load_yaml(raw, f"the value of --set {key}") if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with every ``--set`` override applied in order.

    A section the file does not set starts from its defaults, so that
    ``--set model.backbone.pretrained=none`` keeps the default backbone. When an override
    renames a plugin (``...name=``), options that came only from the default plugin are
    dropped: they belong to the old plugin.
    """
    data = copy.deepcopy(raw)
    defaults = RunConfig().model_dump(mode="json")
    seeded: dict[int, set[str]] = {}  # id(section) -> keys that came from the defaults
    for text in overrides:
        path, value = parse_override(text)
        node, default = data, defaults
        for i, part in enumerate(path[:-1]):
            default = default.get(part) if isinstance(default, dict) else None
            child = node.get(part)
            if child is None:
                child = node[part] = copy.deepcopy(default) if isinstance(default, dict) else {}
                _mark_seeded(child, seeded)
            elif not isinstance(child, dict):
                dotted = ".".join(path[: i + 1])
                raise ConfigError(f"--set {text!r}: {dotted} is a value, not a section")
            node = child
        key = path[-1]
        from_defaults = seeded.get(id(node), set())
        if key == "name" and node.get("name") != value:
            for stale in from_defaults - {"name"}:
                node.pop(stale, None)
            from_defaults.clear()
        from_defaults.discard(key)
        node[key] = value
    return data


def _mark_seeded(section: dict[str, Any], seeded: dict[int, set[str]]) -> None:
    seeded[id(section)] = set(section)
    for value in section.values():
        if isinstance(value, dict):
            _mark_seeded(value, seeded)


#: Problems a validation message lists (the rest are counted).
_MAX_PROBLEMS = 20
#: Quotes a bad value in a few dozen characters, however large it is.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 4
_SHORT.maxlevel = 2


def format_validation_error(exc: ValidationError, source: str,
                            overrides: Sequence[str] = ()) -> str:
    """One line per problem, each naming the dotted key and what is allowed.

    A problem with a key that a ``--set`` override gave (or a section one of them changed)
    names that override, so that it is not taken for a line of the file in ``source``.
    """
    lines = [f"invalid config ({source}):"]
    errors = exc.errors()
    for err in errors[:_MAX_PROBLEMS]:
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        origin = _override_for(tuple(str(p) for p in err["loc"]), overrides)
        if err["type"] == "extra_forbidden":
            parent = _section_model(tuple(err["loc"][:-1]))
            allowed = ", ".join(parent.model_fields) if parent else ""
            msg = f"unknown key. Allowed keys here: {allowed}"
        else:
            msg = err["msg"]
            # a value is worth quoting; a whole section (a cross-key check) is not
            if "input" in err and err["type"] not in ("missing",) \
                    and not isinstance(err["input"], dict):
                msg += f" (got {_SHORT.repr(err['input'])})"
        where = f" [from --set {origin}]" if origin else ""
        lines.append(f"  {key}: {msg.removeprefix('Value error, ')}{where}")
    if len(errors) > _MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - _MAX_PROBLEMS} more")
    return "\n".join(lines)



def _override_for(loc: tuple[str, ...], overrides: Sequence[str]) -> str | None:
    """The last override that set the key at ``loc``, or a key inside that section."""
    if not loc:  # a check across sections: no one override is its cause
        return None
    for text in reversed(overrides):
        key = text.partition("=")[0].strip().split(".")
        if tuple(key[: len(loc)]) == loc or tuple(loc[: len(key)]) == tuple(key):
            return text
    return None


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        model = next((a for a in getattr(ann, "__args__", (ann,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


def validate_config(raw: dict[str, Any], source: str = "config",
                    overrides: Sequence[str] = ()) -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig`.

    ``overrides`` are the ``--set`` texts applied to ``raw``, named in the error lines they
    caused.

    Raises:
        ConfigError: naming every bad key and the allowed values.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid config ({source}): the top level must be a mapping of keys")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, overrides)) from None


def read_yaml(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping safely (no tags, no code) within the bounds of
    :mod:`medxfer.bounded_yaml` (size, nesting, alias expansion); ``what`` names the file in
    messages, which never quote its contents."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a folder; give the YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    source = f"{what} {str(path)!r}"
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source} cannot be read ({exc.strerror or exc})") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_BYTES // 1024} KiB; a run config "
                          "is a few KiB: is it the right file?")
    try:
        raw = load_yaml(data.decode("utf-8"), source)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source} is not valid YAML: it is not UTF-8 text (byte "
                          f"{exc.start})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {describe_yaml_error(exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {str(path)!r}: the top level must be a mapping of keys")
    return raw


def load_config(path: str | os.PathLike[str] | None = None,
                overrides: list[str] | None = None) -> RunConfig:
    """Load a run config from YAML (or the defaults when ``path`` is None), apply overrides.

    A relative path (``data.path``, ``data.target.path``, ``data.split.file``) written in
    the file is taken relative to that file's folder; one given with ``--set`` is taken
    relative to the current folder, as any command-line path is. Both are made absolute.

    Raises:
        ConfigError: for a missing or malformed file, a bad override, or invalid values.
    """
    overrides = list(overrides or [])
    raw = read_yaml(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    source = str(path) if path is not None else "default config"
    config = validate_config(raw, source, overrides)
    folder = Path(path).resolve().parent if path is not None else None

    def anchored(value: str, loc: tuple[str, ...]) -> str:
        relative = Path(value).expanduser()
        if relative.is_absolute():
            return str(relative)
        if _override_for(loc, overrides):
            return os.path.abspath(relative)
        return os.path.normpath(folder / relative) if folder is not None else value

    data = config.data
    if data.path:
        data.path = anchored(data.path, ("data", "path"))
    if data.target is not None:
        data.target.path = anchored(data.target.path, ("data", "target", "path"))
    if data.split.file:
        data.split.file = anchored(data.split.file, ("data", "split", "file"))
    return config


def config_to_yaml(config: RunConfig) -> str:
    """The fully resolved config as YAML (every default spelt out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def write_resolved_config(config: RunConfig, run_dir: str | os.PathLike[str]) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` atomically."""
    target = Path(run_dir) / RESOLVED_CONFIG_NAME
    atomic_write_text(target, config_to_yaml(config))
    return target


def commented_default_config() -> str:
    """The default config as YAML with each key's description as a comment."""
    lines = ["# medxfer run config: every key with its default.",
             "# Pluggable parts are {name: ..., **options}; see `medxfer plugins`."]
    _emit_commented(RunConfig(), lines, indent=0)
    return "\n".join(lines) + "\n"


def _emit_commented(model: BaseModel, lines: list[str], indent: int) -> None:
    pad = " " * indent
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel) and not isinstance(value, PluginSpec):
            lines.append(f"{pad}{name}:")
            _emit_commented(value, lines, indent + 2)
        else:
            dumped = _plain(value)
            if isinstance(dumped, dict) and dumped:
                text = yaml.safe_dump({name: dumped}, sort_keys=False, default_flow_style=None)
            else:
                text = yaml.safe_dump({name: dumped}, default_flow_style=True, width=200)
                text = text.strip()[1:-1] + "\n"
            lines.extend(pad + ln for ln in text.rstrip("\n").split("\n"))


def _plain(value: Any) -> Any:
    """A config value as YAML writes it: models (also in lists, ``tracking``) as dicts."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
