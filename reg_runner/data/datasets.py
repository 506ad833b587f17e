"""datamaestro definitions of the datasets datamaestro-image lacks: Fashion-MNIST, KMNIST and CIFAR-10.

Each names the dataset's published files and their published md5 (the URLs and checksums are those of the
datasets' authors, as torchvision's ``datasets.FashionMNIST``, ``KMNIST`` and ``CIFAR10`` also use them, and each
family declares them); ``reg_runner.data.store.fetch`` downloads what the store lacks. They live in datamaestro's
store under ``data/__custom__/reg_runner/<id>``; a family defines its dataset on first use (``idx_definition``,
``archive_definition``), which imports datamaestro.
"""

import functools

# an IDX dataset's four files: datamaestro's names (stored as <key>.idx) and the datasets' own (LeCun's), in the
# order of ``reg_runner.data.Images``
FILES = (("train_images", "train-images-idx3-ubyte"), ("train_labels", "train-labels-idx1-ubyte"),
         ("test_images", "t10k-images-idx3-ubyte"), ("test_labels", "t10k-labels-idx1-ubyte"))


@functools.cache
def idx_definition(family, identifier: str):
    """The datamaestro dataset of an IDX family: its four .gz files, kept compressed, each checked."""
    from datamaestro.data.tensor import IDX
    from datamaestro.definitions import dataset
    from datamaestro.download.single import filedownloader
    from datamaestro.stream import Identity
    from datamaestro.utils import HashCheck
    from datamaestro_image.data import IDXImage, ImageClassification, LabelledImages

    def images(train_images, train_labels, test_images, test_labels) -> ImageClassification:
        return ImageClassification.C(
            train=LabelledImages.C(images=IDXImage.C(path=train_images), labels=IDX.C(path=train_labels)),
            test=LabelledImages.C(images=IDXImage.C(path=test_images), labels=IDX.C(path=test_labels)),
        )

    images.__doc__ = f"{family.NAME}\n\n{family.__module__} (reg_runner)"
    images.__module__ = __name__
    definition = dataset(ImageClassification, id=identifier, url=family.URL)(images)
    for name, original in FILES:
        filedownloader(f"{name}.idx.gz", f"{family.URL}{original}.gz", transforms=Identity(),
                       checker=HashCheck(family.GZ_MD5[name]))(definition)
    return definition


@functools.cache
def archive_definition(family, identifier: str):
    """The datamaestro dataset of a family published as one .tar.gz (CIFAR-10's python version): the folder it
    unpacks to, the archive checked."""
    from datamaestro.data import Folder
    from datamaestro.definitions import dataset
    from datamaestro.download.archive import tardownloader
    from datamaestro.utils import HashCheck

    def folder(batches) -> Folder:
        return Folder.C(path=batches)

    folder.__doc__ = f"{family.NAME}\n\n{family.__module__} (reg_runner)"
    folder.__module__ = __name__
    return tardownloader("batches", family.URL, checker=HashCheck(family.TAR_MD5))(
        dataset(Folder, id=identifier, url=family.URL)(folder))
