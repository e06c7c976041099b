"""The registered datasets: their files, checksums, mirrors and class names.

Each entry says where its files come from (https mirrors, a distribution package, or one
archive) and the SHA-256 they must have, with the sources of each value noted beside it.
data.py finds, downloads and verifies the files; this file only describes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DataError


@dataclass(frozen=True)
class IdxFile:
    name: str                # file name in the official distribution (gzip), or in the archive's folder
    sha256_gz: str           # SHA-256 of the official .gz (an archive member: of the member as stored)
    sha256_raw: str | None   # SHA-256 of the decompressed IDX bytes, which also holds for re-compressed copies
                             # (Debian's); None where no trustworthy source publishes it
    size_gz: int | None      # bytes of the official .gz; a download larger than this is cut off. None for an
                             # archive member: no source publishes its size, the verified archive bounds it


@dataclass(frozen=True)
class Archive:
    """One official download holding the dataset's files (EMNIST: one zip of all six splits)."""
    name: str            # file name at the mirror
    sha256: str          # SHA-256 of the official archive
    size: int            # bytes; a download larger than this is cut off
    folder: str          # the members' folder inside the archive
    mapping: str | None  # member listing "label ASCII-code" per line, checked against the class names


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]
    files: dict[str, IdxFile]       # role (train_images, train_labels, test_images, test_labels) -> file
    mirrors: tuple[str, ...]        # https base URLs, tried in order
    system_dirs: tuple[str, ...] = ()   # read-only installs (distribution packages)
    archive: Archive | None = None  # the files come out of this one download instead of one download each
    transposed: bool = False        # images stored transposed (EMNIST); the loader turns them upright


def _mnist_layout(prefix: str, sums: dict[str, tuple[str, int | None]], test: str = "t10k",
                  sha256_raw: dict[str, str] | None = None) -> dict[str, IdxFile]:
    """The four files of the MNIST layout: {prefix}train-images-idx3-ubyte.gz etc., from {role: (sha256, size)}."""
    names = {"train_images": f"{prefix}train-images-idx3-ubyte.gz",
             "train_labels": f"{prefix}train-labels-idx1-ubyte.gz",
             "test_images": f"{prefix}{test}-images-idx3-ubyte.gz",
             "test_labels": f"{prefix}{test}-labels-idx1-ubyte.gz"}
    return {role: IdxFile(names[role], sha, (sha256_raw or {}).get(role), size) for role, (sha, size) in sums.items()}


FASHION_MNIST = DatasetInfo(
    name="fashion-mnist",
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    files=_mnist_layout("", {
        "train_images": ("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train_labels": ("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "test_images": ("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "test_labels": ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    }, sha256_raw={
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    }),
    mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",),
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)

# MNIST. SHA-256 and sizes as in tensorflow/datasets' url_checksums/mnist.txt (for storage.googleapis.com/
# cvdf-datasets, the mirror tfds and Keras use); the same four SHA-256 in pytorch/vision's
# torchvision/prototype/datasets/_builtin/mnist.py, which checks one value per file against both of its
# mirrors, yann.lecun.com and ossci-datasets.s3 (so that mirror serves the same bytes), and in notwa/mnists'
# hashes.py; the sizes also in TensorFlow's input_data download log ("train-labels-idx1-ubyte.gz 28881 bytes").
# No source publishes the decompressed content's SHA-256.
MNIST = DatasetInfo(
    name="mnist",
    classes=tuple("0123456789"),
    files=_mnist_layout("", {
        "train_images": ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train_labels": ("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "test_images": ("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "test_labels": ("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    }),
    mirrors=("https://storage.googleapis.com/cvdf-datasets/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
)

# Kuzushiji-MNIST (rois-codh/kmnist, the files as re-issued on 5 February 2019). SHA-256 and sizes as in
# tensorflow/datasets' url_checksums/kmnist.txt; the same SHA-256 in pytorch/vision's prototype
# datasets/_builtin/mnist.py and ankane/torchvision-ruby's kmnist.rb; the same sizes in the git-annex keys of
# datasets-mila/datasets--kmnist (fetched in January 2022; their MD5s are torchvision's). The project's README
# links http://, but other projects fetch the same path over https (torchvision-ruby's mirror list, Quandela's
# dataset loaders), so the downloader's https-only rule holds; the SHA-256 would catch a wrong file either way.
# Classes: kmnist_classmap.csv (0 U+304A お, き, す, つ, な, は, ま, や, れ, 9 U+3092 を, as in a Go loader's copy
# of it), named in romaji as torchvision names them: matplotlib's default font has no kana, and a class name
# drawn as empty boxes in every figure teaches nothing.
KMNIST_KANA = ("お", "き", "す", "つ", "な", "は", "ま", "や", "れ", "を")
KMNIST = DatasetInfo(
    name="kmnist",
    classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    files=_mnist_layout("", {
        "train_images": ("51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4", 18165135),
        "train_labels": ("e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17", 29497),
        "test_images": ("edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5", 3041136),
        "test_labels": ("20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c", 5120),
    }),
    mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
)

# EMNIST Balanced (Cohen et al. 2017, arXiv:1702.05373): 112,800 training and 18,800 test images of 47 classes,
# from NIST's one zip of all six splits. The zip's size and SHA-256 as in tensorflow/datasets'
# url_checksums/emnist.txt (for www.itl.nist.gov/iaui/vip/cs_links/EMNIST/gzip.zip, the old address of the same
# file); the same SHA-256 for https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip in several unrelated
# projects that check it (a Ruby EMNIST fetcher, a JavaScript EMNIST-Balanced loader, Python data scripts).
# Members' SHA-256: notwa/mnists' hashes.py; the two training files also pinned by an unrelated
# data-preparation script "after CRC32/length-checked extraction from the official NIST ZIP"; the two test
# files have only that one source (ten of its other values, four MNIST, six EMNIST, agree with second sources).
# Classes: emnist-balanced-mapping.txt (checked on extraction) gives the ASCII codes of digits, capitals and
# the 11 lower-case letters whose shapes differ from their capitals; torchvision derives the same list.
EMNIST_BALANCED = DatasetInfo(
    name="emnist-balanced",
    classes=tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"),
    files=_mnist_layout("emnist-balanced-", {
        "train_images": ("74295e75e4e9fa2c102147460ee7eb763653d5132d883a84fb88932bfb8d2db4", None),
        "train_labels": ("b46d41e5156a0a8aaaa4d18979fdd1588850fa8571018acffd5d93b325a7d6ed", None),
        "test_images": ("117fc12b015e37ea98bfb2cbba3f77c3782c056cdbd219b87abfc8661d7135db", None),
        "test_labels": ("a67cac948379b67270b9a4d0a01c8ec661598accf2f2b1964340b7c83cb175cd", None),
    }, test="test"),
    mirrors=("https://biometrics.nist.gov/cs_links/EMNIST/",),
    archive=Archive("gzip.zip", "fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e", 561753746,
                    folder="gzip/", mapping="emnist-balanced-mapping.txt"),
    # NIST wrote each 28×28 image column by column: read as MNIST does, letters lie on their side, mirrored.
    transposed=True,
)

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (FASHION_MNIST, MNIST, KMNIST, EMNIST_BALANCED)}


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for a dataset name, or a DataError listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
