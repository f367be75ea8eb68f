"""edgenn.datasets on real files: IDX validation, data-set resolution, splits, folders, CSV."""

from __future__ import annotations

import ast
import functools
import gzip
import http.server
import importlib
import pkgutil
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgenn import datasets as data
from edgenn.datasets import DataSpec, fashion_mnist
from edgenn.errors import EdgennError, UsageError

from .conftest import SAMPLES

# ----------------------------------------------------------------------------- IDX


def test_read_idx_real_files(fmnist_dir):
    images = data.read_idx(fmnist_dir / "t10k-images-idx3-ubyte.gz")
    labels = data.read_idx(fmnist_dir / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert set(np.unique(labels)) == set(range(10))
    # Fashion-MNIST's test set is balanced: 1,000 images per class.
    assert np.all(np.bincount(labels) == 1000)


def test_read_idx_uncompressed_equals_gz(fmnist_dir, tmp_path):
    raw = gzip.decompress((fmnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "labels").write_bytes(raw)
    a = data.read_idx(tmp_path / "labels")
    b = data.read_idx(fmnist_dir / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(a, b)


def test_read_idx_truncated_payload_is_an_error(fmnist_dir, tmp_path):
    raw = gzip.decompress((fmnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(raw[:-784])  # one image short
    with pytest.raises(
        EdgennError, match=r"holds 7839216 data bytes but its header \[10000, 28, 28\]"
    ):
        data.read_idx(path)


def test_read_idx_truncated_gzip_is_an_error(fmnist_dir, tmp_path):
    gz = (fmnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gz[: len(gz) // 2])
    with pytest.raises(EdgennError, match="may be truncated"):
        data.read_idx(path)


def test_read_idx_wrong_magic_is_an_error(tmp_path):
    path = tmp_path / "notidx"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(EdgennError, match="is not an IDX file: magic bytes 89504e47"):
        data.read_idx(path)


# ----------------------------------------------------------------------------- resolution


def test_locate_prefers_data_dir(fmnist_dir, tmp_path):
    for f in fmnist_dir.glob("*.gz"):
        shutil.copy(f, tmp_path / f.name)
    assert data.locate_fashion_mnist(tmp_path) == tmp_path


def test_locate_data_dir_missing_files_names_them(tmp_path):
    with pytest.raises(EdgennError, match="lacks Fashion-MNIST files: train-images-idx3-ubyte"):
        data.locate_fashion_mnist(tmp_path)


def test_locate_prefers_working_directory_copy(fmnist_dir, tmp_path, monkeypatch):
    local = tmp_path / "datasets" / "fashion-mnist"
    local.mkdir(parents=True)
    for f in fmnist_dir.glob("*.gz"):
        shutil.copy(f, local / f.name)
    monkeypatch.chdir(tmp_path)
    assert data.locate_fashion_mnist() == local


def test_locate_falls_back_to_debian(fmnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The module that looks the copy up reads its own global; the package only re-exports it.
    monkeypatch.setattr(fashion_mnist, "REPO_DATASETS", tmp_path / "nothing")
    assert data.locate_fashion_mnist(allow_download=False) == fmnist_dir


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A Fashion-MNIST mirror on 127.0.0.1 serving a folder (nothing leaves this machine)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_verifies_checksums(fmnist_dir, mirror, tmp_path):
    root, url = mirror
    for f in fmnist_dir.glob("*.gz"):
        shutil.copy(f, root / f.name)
    dest = data.download_fashion_mnist(tmp_path / "cache", base_url=url)
    assert sorted(p.name for p in dest.iterdir()) == sorted(f.name for f in fmnist_dir.glob("*.gz"))
    ds = data.load_fashion_mnist(dest)
    assert ds.x.shape == (60000, 28, 28, 1)


def test_download_rejects_a_bad_checksum(fmnist_dir, mirror, tmp_path):
    root, url = mirror
    for f in fmnist_dir.glob("*.gz"):
        shutil.copy(f, root / f.name)
    # The mirror serves the test labels under the training labels' name: valid gzip, wrong content.
    shutil.copy(fmnist_dir / "t10k-labels-idx1-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    cache = tmp_path / "cache"
    with pytest.raises(EdgennError, match="train-labels-idx1-ubyte.gz decompresses to SHA-256"):
        data.download_fashion_mnist(cache, base_url=url)
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert not list(cache.glob("*.tmp"))


def test_download_unreachable_mirror_says_how_to_install(tmp_path):
    with pytest.raises(EdgennError, match="apt-get install dataset-fashion-mnist"):
        data.download_fashion_mnist(tmp_path, base_url="http://127.0.0.1:9/")


# ----------------------------------------------------------------------------- splits


@pytest.fixture(scope="module")
def fmnist():
    return data.load_fashion_mnist(allow_download=False)


def test_fashion_mnist_splits_are_deterministic_stratified_and_disjoint(fmnist):
    spec = DataSpec(seed=3)
    a = data.make_splits(spec, fmnist)
    b = data.make_splits(spec, fmnist)
    np.testing.assert_array_equal(a.y_train, b.y_train)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert (len(a.y_train), len(a.y_val), len(a.y_test)) == (54000, 6000, 10000)
    assert np.all(np.bincount(a.y_val) == 600)  # stratified: 10% of each class
    # Validation images are not among the training images.
    train_keys = {x.tobytes() for x in a.x_train[::1]}
    assert (
        sum(x.tobytes() in train_keys for x in a.x_val) < 10
    )  # only the data set's own duplicates
    # The test split is the official one.
    np.testing.assert_array_equal(a.y_test, fmnist.y_test)


def test_test_split_does_not_depend_on_limit_or_val_fraction(sklearn_data_dir):
    digits = data.load_digits()
    full = data.make_splits(DataSpec(dataset="digits", seed=1), digits)
    small = data.make_splits(
        DataSpec(dataset="digits", seed=1, limit=200, val_fraction=0.3), digits
    )
    np.testing.assert_array_equal(full.x_test, small.x_test)
    assert len(small.y_train) + len(small.y_val) == 200
    other_seed = data.make_splits(DataSpec(dataset="digits", seed=2), digits)
    assert not np.array_equal(full.x_test, other_seed.x_test)


def test_limit_is_stratified(fmnist):
    s = data.make_splits(DataSpec(limit=2000), fmnist)
    counts = np.bincount(np.concatenate([s.y_train, s.y_val]), minlength=10)
    assert counts.sum() == 2000 and counts.min() == 200 == counts.max()


def test_bad_fractions_and_limits_are_usage_errors(fmnist):
    with pytest.raises(UsageError, match="between 0 and 1"):
        data.make_splits(DataSpec(val_fraction=1.5), fmnist)
    with pytest.raises(UsageError, match="--limit 3 is too small"):
        data.make_splits(DataSpec(limit=3), fmnist)


def test_representative_sample_is_stratified(fmnist):
    sample = data.representative_sample(fmnist.x, fmnist.y, 300, seed=0)
    assert sample.shape == (300, 28, 28, 1)


def test_stratified_indices_exact_count():
    y = np.array([0] * 7 + [1] * 5 + [2] * 3)
    taken, rest = data.stratified_indices(y, 0.4, seed=0)
    assert len(taken) == 6 and len(rest) == 9
    assert set(taken).isdisjoint(rest)


# ----------------------------------------------------------------------------- digits


def test_digits_are_real_sklearn_digits():
    ds = data.load_digits()
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.dtype == np.uint8
    assert ds.x.max() == 255 and ds.labels == [str(i) for i in range(10)]
    assert ds.spec.input_shape == [8, 8, 1]


def test_digits_resized_to_another_model_input():
    ds = data.load_dataset(DataSpec(dataset="digits", input_size=[28, 28]))
    assert ds.x.shape == (1797, 28, 28, 1)
    assert ds.spec.input_shape == [28, 28, 1]


# ----------------------------------------------------------------------------- image folders


def test_image_folder_samples():
    ds = data.load_dataset(DataSpec(dataset=str(SAMPLES)))
    assert ds.labels[0] == "Ankle_boot" and len(ds.labels) == 10
    assert ds.x.shape == (300, 28, 28, 1)  # grayscale JPEGs, 28x28
    assert ds.spec.color_mode == "L"
    # JPEG round trip of real test images: close to the IDX pixels, not equal.
    fm = data.load_fashion_mnist(allow_download=False)
    i = ds.labels.index("Trouser")
    path = sorted((SAMPLES / "Trouser").glob("*.jpg"))[0]
    index = int(path.stem.split("-")[1])
    assert fm.y_test[index] == data.FASHION_MNIST_LABELS.index("Trouser")
    decoded = ds.x[np.flatnonzero(ds.y == i)[0]].astype(int)
    assert np.abs(decoded - fm.x_test[index].astype(int)).mean() < 4


def _folder_with(tmp_path, images: dict[str, list[Image.Image]]) -> Path:
    root = tmp_path / "photos"
    for cls, imgs in images.items():
        (root / cls).mkdir(parents=True)
        for i, img in enumerate(imgs):
            img.save(root / cls / f"{i}.png")
    return root


def _sample_image(name: str) -> Image.Image:
    return Image.open(sorted((SAMPLES / name).glob("*.jpg"))[0]).convert("RGB")


def test_image_folder_rgb_any_size_resized(tmp_path):
    big = _sample_image("Bag").resize((300, 200))
    small = _sample_image("Sandal").resize((50, 40))
    root = _folder_with(tmp_path, {"bag": [big, big], "sandal": [small, small.copy()]})
    ds = data.load_dataset(DataSpec(dataset=str(root), input_size=[32, 32]))
    assert ds.x.shape == (4, 32, 32, 3) and ds.spec.color_mode == "RGB"


def test_image_folder_applies_exif_orientation(tmp_path):
    img = _sample_image("Trouser").resize((40, 20))  # wide
    root = tmp_path / "photos"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
        img.save(root / cls / "x.jpg", exif=exif)
    ds = data.load_dataset(DataSpec(dataset=str(root), input_size=[20, 10]))
    # Upright, the photo is 20 wide and 40 tall; a 20x10 (HxW) resize keeps that aspect.
    from edgenn.preprocess import open_image

    assert open_image(root / "a" / "x.jpg", "RGB").size == (20, 40)
    assert ds.x.shape == (2, 20, 10, 3)


def test_image_folder_empty_class_is_an_error(tmp_path):
    root = _folder_with(tmp_path, {"bag": [_sample_image("Bag")]})
    (root / "empty").mkdir()
    with pytest.raises(EdgennError, match=r"Class folder .*empty holds no images"):
        data.load_dataset(DataSpec(dataset=str(root)))


def test_image_folder_unreadable_image_is_an_error(tmp_path):
    root = _folder_with(tmp_path, {"a": [_sample_image("Bag")], "b": [_sample_image("Coat")]})
    (root / "b" / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(
        EdgennError, match=r"broken.jpg is not an image Pillow can decode.*Remove or replace"
    ):
        data.load_dataset(DataSpec(dataset=str(root)))


def test_missing_folder_and_unknown_name():
    with pytest.raises(UsageError, match="Unknown data set 'no-such-set'"):
        data.load_dataset(DataSpec(dataset="no-such-set"))


# ----------------------------------------------------------------------------- CSV


def test_csv_classification_with_text_target(iris_csv):
    ds = data.load_dataset(DataSpec(dataset=str(iris_csv), target_column="species"))
    assert ds.task == "classification" and ds.labels == ["setosa", "versicolor", "virginica"]
    assert ds.x.shape == (150, 4)
    s = data.make_splits(DataSpec(dataset=str(iris_csv), target_column="species"), ds)
    assert np.bincount(s.y_test).tolist() == [10, 10, 10]
    # Standardization fitted on the training split only.
    np.testing.assert_allclose(s.spec.mean, s.x_train.mean(axis=0), rtol=1e-5)


def test_csv_regression(diabetes_csv):
    spec = DataSpec(dataset=str(diabetes_csv), target_column="progression")
    s = data.make_splits(spec)
    assert s.task == "regression" and s.labels == []
    assert s.spec.target_mean == pytest.approx(float(np.mean(s.y_train)))
    assert len(s.y_test) == round(0.2 * 442)


def test_csv_missing_target_column_lists_columns(iris_csv):
    with pytest.raises(EdgennError, match="has no column 'price'; its columns are: sepal_length"):
        data.load_dataset(DataSpec(dataset=str(iris_csv), target_column="price"))


def test_csv_without_target_column_is_usage_error(iris_csv):
    with pytest.raises(UsageError, match="--target-column"):
        data.load_dataset(DataSpec(dataset=str(iris_csv)))


def test_csv_single_class_target(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("a,b,label\n1,2,yes\n3,4,yes\n")
    with pytest.raises(EdgennError, match="has a single class \\('yes'\\)"):
        data.load_dataset(DataSpec(dataset=str(path), target_column="label"))


def test_csv_non_numeric_feature_names_line_and_column(iris_csv, tmp_path):
    lines = iris_csv.read_text().splitlines()
    lines[5] = "5.0,wide,1.4,0.2,setosa"
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(EdgennError, match=r"line 6, column 'sepal_width': 'wide' is not a number"):
        data.load_dataset(DataSpec(dataset=str(path), target_column="species"))


def test_csv_regression_on_text_target_is_an_error(iris_csv):
    with pytest.raises(EdgennError, match="regression needs a numeric target"):
        data.load_dataset(
            DataSpec(dataset=str(iris_csv), target_column="species", task="regression")
        )


def test_data_spec_round_trip(tmp_path):
    spec = DataSpec(dataset="digits", seed=7, limit=500, input_size=[28, 28])
    data.save_data_spec(spec, tmp_path)
    assert data.load_data_spec(tmp_path) == spec
    with pytest.raises(EdgennError, match="not an edgenn run directory"):
        data.load_data_spec(tmp_path / "nope")


def test_csv_auto_takes_few_integers_as_classes_in_numeric_order(tmp_path):
    path = tmp_path / "grades.csv"
    path.write_text("hours,grade\n1,2\n2,10\n3,1\n4,2\n5,10\n6,1\n")
    ds = data.load_dataset(DataSpec(dataset=str(path), target_column="grade"))
    assert ds.task == "classification"
    assert ds.labels == ["1", "2", "10"]  # numeric order, not text order
    assert ds.y.tolist() == [1, 2, 0, 1, 2, 0]


# ----------------------------------------------------------------------------- package layout


def test_repo_datasets_is_the_checkout_datasets_folder():
    # The checkout's own copy sits beside edgenn/, where this repository keeps make_samples.py.
    assert fashion_mnist.REPO_DATASETS == SAMPLES.parent
    assert (fashion_mnist.REPO_DATASETS / "make_samples.py").is_file()
    assert fashion_mnist.CHECKSUM_FILE.is_file()


def test_find_idx_prefers_gzip(fmnist_dir, tmp_path):
    gz = tmp_path / "t10k-labels-idx1-ubyte.gz"
    shutil.copy(fmnist_dir / gz.name, gz)
    assert data.find_idx(tmp_path, "t10k-labels-idx1-ubyte") == gz
    gz.rename(tmp_path / "t10k-labels-idx1-ubyte")
    assert data.find_idx(tmp_path, "t10k-labels-idx1-ubyte") == tmp_path / gz.stem
    assert data.find_idx(tmp_path, "train-labels-idx1-ubyte") is None


def _defined_names(module) -> set[str]:
    """Public names a module defines at top level (not the ones it imports)."""
    tree = ast.parse(Path(module.__file__).read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def test_package_re_exports_every_public_name_of_its_modules():
    modules = [
        importlib.import_module(f"edgenn.datasets.{info.name}")
        for info in pkgutil.iter_modules(data.__path__)
    ]
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {
        "idx",
        "fashion_mnist",
        "digits",
        "image_folder",
        "csv_table",
        "splits",
    }
    defined: dict[str, str] = {}
    for module in modules:
        for name in _defined_names(module):
            # One owner: no name is defined in two modules of the package.
            assert name not in defined, f"{name} is defined in {defined.get(name)} and {module}"
            defined[name] = module.__name__
            assert getattr(data, name) is getattr(module, name)
    assert sorted(data.__all__) == sorted(defined)
