"""Property-based tests (Hypothesis): whatever the input, a result or a medxfer error.

Config files and ``--set`` overrides of any text or shape, and real image files from
``../shared/data`` with flipped bits, cut short or under another extension: each is read
into a result or refused with a :class:`~medxfer.errors.MedxferError` (exit 2 in the CLI),
never a traceback, an abort, a hang or memory exhausted. Examples are few and bounded in
time so that the suite stays fast; the ``slow`` variants try more of them.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from medxfer.config import (  # noqa: E402
    RunConfig,
    config_to_yaml,
    load_config,
    write_resolved_config,
)
from medxfer.errors import ConfigError, MedxferError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: Few examples, each bounded in time; no example database written into the repository.
FAST = settings(max_examples=40, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
MORE = settings(max_examples=2000, deadline=5000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
#: Readers refuse most damaged files in milliseconds: more of them in the fast lane too.
READERS = settings(FAST, max_examples=150)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("properties")


def loads_or_refuses(path: Path | None, overrides: list[str] = ()) -> RunConfig | None:
    """``load_config``: a config, or ``None`` for a ConfigError; anything else fails."""
    try:
        return load_config(path, list(overrides))
    except ConfigError:
        return None


# --- config files -----------------------------------------------------------------------------

def _section_keys() -> dict[str, list[str]]:
    """Every section of a run config and its keys (to draw documents shaped like configs)."""
    from pydantic import BaseModel

    sections: dict[str, list[str]] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        sections[prefix] = list(model.model_fields)
        for name, field in model.model_fields.items():
            annotation = field.annotation
            for candidate in getattr(annotation, "__args__", (annotation,)):
                if isinstance(candidate, type) and issubclass(candidate, BaseModel) \
                        and "name" not in candidate.model_fields:
                    walk(candidate, f"{prefix}.{name}".lstrip("."))

    walk(RunConfig, "")
    return sections


SECTIONS = _section_keys()
DOTTED_KEYS = sorted(f"{section}.{key}".lstrip(".") for section, keys in SECTIONS.items()
                     for key in keys)

scalars = (st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats()
           | st.text(max_size=20) | st.sampled_from(["auto", "none", "imagenet", "resnet18",
                                                     "basic_cnn", "l2sp", "[1, 2]", "~"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def config_shaped(draw) -> dict[str, Any]:
    """A mapping with real sections and keys (and a few that are not), any values."""
    doc: dict[str, Any] = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), max_size=5, unique=True)):
        keys = SECTIONS[section]
        body = draw(st.dictionaries(st.sampled_from(keys) | st.text(max_size=6), values,
                                    max_size=4))
        node = doc
        for part in [p for p in section.split(".") if p]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node.update(body)
    return doc


@FAST
@given(text=st.text(max_size=300))
def test_any_text_as_a_config_file_loads_or_is_refused(scratch, text):
    path = scratch / "text.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path)


@FAST
@given(doc=config_shaped())
def test_config_shaped_documents_load_or_are_refused_and_round_trip(scratch, doc):
    path = scratch / "shaped.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    config = loads_or_refuses(path)
    if config is not None:  # a loaded config's resolved YAML loads as itself
        again = load_config(write_resolved_config(config, scratch / "resolved"))
        assert config_to_yaml(again) == config_to_yaml(config)


@st.composite
def aliased_documents(draw) -> str:
    """Layers of anchored lists, each holding aliases of the layers before it."""
    layers = draw(st.integers(1, 12))
    lines = [f"l0: &a0 {draw(st.sampled_from(['x', '[1, 2]', '{k: v}']))}"]
    for i in range(1, layers):
        refs = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=12))
        lines.append(f"l{i}: &a{i} [{', '.join(f'*a{j}' for j in refs)}]")
    where = draw(st.sampled_from(["top", "classes", "plugin"]))
    last = f"*a{layers - 1}"
    if where == "classes":
        lines.append(f"data: {{classes: {last}}}")
    elif where == "plugin":
        lines.append(f"strategy: {{name: l2sp, weights: {last}}}")
    return "\n".join(lines) + "\n"


@FAST
@given(text=aliased_documents())
def test_aliases_expand_within_bounds_or_are_refused(scratch, text):
    path = scratch / "aliases.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(path)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """``data`` with each (position, kind, byte) edit: 0 flips a bit, 1 deletes, 2 inserts."""
    out = bytearray(data)
    for position, kind, value in edits:
        if not out:
            break
        position %= len(out)
        if kind == 0:
            out[position] ^= 1 << (value % 8)
        elif kind == 1:
            del out[position]
        else:
            out.insert(position, value)
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 2), st.integers(0, 255)),
                 min_size=1, max_size=6)


@FAST
@given(name=st.sampled_from(sorted(p.name for p in (REPO / "configs").glob("*.yaml"))),
       changes=edits)
def test_shipped_configs_with_edited_bytes_load_or_are_refused(scratch, name, changes):
    path = scratch / name
    path.write_bytes(mutate((REPO / "configs" / name).read_bytes(), changes))
    loads_or_refuses(path)


# --- --set ------------------------------------------------------------------------------------

@FAST
@given(text=st.text(max_size=120))
def test_any_set_text_loads_or_is_refused(text):
    loads_or_refuses(None, [text])


yamlish = st.one_of(st.text(max_size=30), scalars.map(lambda v: yaml.safe_dump(v).strip()),
                    values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()))


@FAST
@given(overrides=st.lists(st.tuples(st.sampled_from(DOTTED_KEYS) | st.text(max_size=12),
                                    yamlish), min_size=1, max_size=4))
def test_set_on_real_keys_loads_or_is_refused(overrides):
    loads_or_refuses(None, [f"{key}={value}" for key, value in overrides])


@settings(max_examples=15, deadline=20000, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(DOTTED_KEYS), value=yamlish)
def test_config_show_with_any_set_exits_0_or_2(key, value):
    from medxfer.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        assert main(["config", "show", "--set", f"{key}={value}"]) in (0, 2)
    assert "Traceback" not in err.getvalue()


# --- readers on damaged real files ------------------------------------------------------------

@contextlib.contextmanager
def memory_limited(extra_bytes: int = 2 << 30) -> Iterator[None]:
    """Address space limited to what the process has plus ``extra_bytes``, so that a file
    that would make a reader allocate without bound raises MemoryError instead of
    exhausting the machine (Linux; elsewhere no limit)."""
    try:
        import resource

        size = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        before = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (size + extra_bytes, before[1]))
    except (ImportError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, before)


class RealFiles(dict):
    """Suffix -> bytes of a real file (a short repr: Hypothesis prints its arguments)."""

    def __repr__(self) -> str:
        return f"RealFiles({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


@pytest.fixture(scope="module")
def real_files(tmp_path_factory) -> RealFiles:
    """Small real files from ../shared/data (and the repo's sample PNG), by suffix; held in
    memory and written to temporary files, never into the repository. Each is read once
    here, which also imports the readers before the timed examples."""
    import SimpleITK as sitk

    from medxfer.data.medmnist import load_medmnist
    from medxfer.data.readers import read_image
    from tests.conftest import shared_data_dir

    shared = shared_data_dir()
    if not shared.is_dir():
        pytest.skip(f"real data not available at {shared} (set MEDXFER_SHARED_DATA)")
    nifti = shared / "msd_hippocampus" / "imagesTr" / "hippocampus_001.nii.gz"
    files = RealFiles({
        ".nii.gz": nifti.read_bytes(),
        ".nii": gzip.decompress(nifti.read_bytes()),
        ".dcm": (shared / "dicom" / "PGBM-003" / "MaskTumor" / "000000.dcm").read_bytes(),
        ".npz": (shared / "medmnist" / "breastmnist.npz").read_bytes(),
        ".png": sorted((REPO / "sample_data" / "classification").rglob("*.png"))[0].read_bytes(),
    })
    folder = tmp_path_factory.mktemp("intact")
    for suffix, content in files.items():
        (folder / f"intact{suffix}").write_bytes(content)
        if suffix == ".npz":
            load_medmnist(folder / f"intact{suffix}")
        else:
            assert read_image(folder / f"intact{suffix}").array.size
    # the same volume as MetaImage, for the ITK reader (its warnings are off once read)
    sitk.WriteImage(sitk.ReadImage(str(folder / "intact.nii.gz")), str(folder / "v.mha"))
    files[".mha"] = (folder / "v.mha").read_bytes()
    assert read_image(folder / "v.mha").array.size
    return files


def read_or_refuse(path: Path) -> None:
    """Read ``path`` as medxfer reads a file of its suffix: a result or a MedxferError."""
    from medxfer.data.medmnist import load_medmnist
    from medxfer.data.readers import read_image

    with memory_limited():
        try:
            load_medmnist(path) if path.suffix == ".npz" else read_image(path)
        except MedxferError:
            pass


suffixes = st.sampled_from([".nii.gz", ".nii", ".dcm", ".npz", ".png", ".mha"])


#: How a real file is damaged: (its suffix, how, where and what, the suffix it is given)
damage = st.tuples(
    suffixes,
    st.sampled_from(["truncate", "header", "anywhere", "edit"]),
    st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 2), st.integers(0, 255)),
             min_size=1, max_size=8),
    suffixes | st.none())


def damaged(files: RealFiles, how: tuple) -> tuple[str, bytes]:
    """The suffix and bytes of a real file damaged as ``how`` (a draw of :data:`damage`)
    says: cut short, with bits flipped in its first KiB or anywhere, or bytes edited; under
    its own suffix (``None``) or another."""
    source, kind, changes, suffix = how
    data = files[source]
    if kind == "truncate":
        data = data[:changes[0][0] % len(data)]
    elif kind == "edit":
        data = mutate(data, changes)
    else:
        span = min(len(data), 1024) if kind == "header" else len(data)
        data = mutate(data, [(position % span, 0, bit) for position, _, bit in changes])
    return suffix or source, data


def _check_damaged_file(real_files, scratch, how) -> None:
    suffix, content = damaged(real_files, how)
    path = scratch / f"damaged{suffix}"
    path.write_bytes(content)
    read_or_refuse(path)


@READERS
@given(how=damage)
@example(how=(".npz", "header", [(66, 0, 1)], None))  # zlib.error escaped the npz reader
@example(how=(".dcm", "header", [(699, 0, 6)], None))  # pydicom's NotImplementedError did
def test_damaged_real_files_are_read_or_refused(real_files, scratch, how):
    _check_damaged_file(real_files, scratch, how)


@pytest.mark.slow
@MORE
@given(how=damage)
def test_many_damaged_real_files_are_read_or_refused(real_files, scratch, how):
    _check_damaged_file(real_files, scratch, how)


@FAST
@given(source=suffixes, suffix=suffixes)
def test_whole_real_files_under_another_extension_are_read_or_refused(real_files, scratch,
                                                                      source, suffix):
    path = scratch / f"renamed{suffix}"
    path.write_bytes(real_files[source])
    read_or_refuse(path)


# --- headers that claim more than their file holds --------------------------------------------

def _nifti(path: Path, shape: tuple[int, ...]) -> None:
    import nibabel

    header = nibabel.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype("float32")
    raw = header.binaryblock + b"\0" * 1004
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)


def _metaimage(path: Path, shape: tuple[int, ...]) -> None:
    data = gzip.compress(b"\0" * 100)
    path.write_bytes(("ObjectType = Image\nNDims = 3\nDimSize = %d %d %d\nElementType = "
                      "MET_FLOAT\nCompressedData = True\nCompressedDataSize = %d\n"
                      "ElementDataFile = LOCAL\n" % (*shape, len(data))).encode() + data)


@pytest.mark.parametrize("name", ["claims.nii.gz", "claims.nii", "claims.mha", "claims.dcm"])
def test_a_header_claiming_gigabytes_is_refused_before_they_are_allocated(tmp_path, name):
    """A file of a few bytes whose header claims 2 GiB of voxels (1024 x 1024 x 512, or
    4000 DICOM frames) made the readers allocate them (and MetaImage returned them)."""
    from medxfer.data.readers import read_image
    from medxfer.errors import DataError

    path = tmp_path / name
    if name.endswith(".dcm"):
        import pydicom

        from tests.conftest import shared_data_dir

        source = shared_data_dir() / "dicom" / "PGBM-003" / "MaskTumor" / "000000.dcm"
        if not source.is_file():
            pytest.skip(f"real data not available at {source.parent}")
        dataset = pydicom.dcmread(source)
        dataset.NumberOfFrames = 4000
        dataset.save_as(path)
    elif ".nii" in name:
        _nifti(path, (1024, 1024, 512))
    else:
        _metaimage(path, (1024, 1024, 512))
    with memory_limited(1 << 30), pytest.raises(DataError, match="claims .* the file is damaged"):
        read_image(path)
