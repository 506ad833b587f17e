"""datamaestro definitions of the datasets datamaestro-image lacks: Fashion-MNIST, KMNIST and CIFAR-10.

Each names the dataset's published files and their published md5 (the URLs and checksums are those of the
datasets' authors, as torchvision's ``datasets.FashionMNIST``, ``KMNIST`` and ``CIFAR10`` also use them);
``reg_runner.data.store.fetch`` downloads what the store lacks. They live in datamaestro's store under
``data/__custom__/reg_runner/<id>``, and the ``datamaestro`` command knows them once this module is imported.
"""

from datamaestro.data import Folder
from datamaestro.data.tensor import IDX
from datamaestro.definitions import dataset
from datamaestro.download.archive import tardownloader
from datamaestro.download.single import filedownloader
from datamaestro.stream import Identity
from datamaestro.utils import HashCheck
from datamaestro_image.data import IDXImage, ImageClassification, LabelledImages

from reg_runner.data.cifar10 import CIFAR10
from reg_runner.data.fashion_mnist import FashionMNIST
from reg_runner.data.idx_dataset import FILES
from reg_runner.data.kmnist import KMNIST


def idx_definition(family, identifier: str):
    """The datamaestro dataset of an IDX family: its four .gz files, kept compressed, each checked."""

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


def _cifar10(batches) -> Folder:
    """CIFAR-10

    The CIFAR-10 python version: pickled batches (reg_runner.data.cifar10)."""
    return Folder.C(path=batches)


fashion_mnist = idx_definition(FashionMNIST, "com.github.zalandoresearch.fashion_mnist")
kmnist = idx_definition(KMNIST, "jp.ac.rois.codh.kmnist")
cifar10 = tardownloader("batches", CIFAR10.URL, checker=HashCheck(CIFAR10.TAR_MD5))(
    dataset(Folder, id="edu.toronto.cs.kriz.cifar10", url=CIFAR10.URL)(_cifar10))

DEFINITIONS = {FashionMNIST.NAME: fashion_mnist, KMNIST.NAME: kmnist, CIFAR10.NAME: cifar10}
