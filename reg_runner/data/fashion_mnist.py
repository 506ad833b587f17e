"""Fashion-MNIST (``data=fashion_mnist``): Zalando's 28x28 grey images of clothing in 10 classes, in MNIST's
format and sizes (Xiao, Rasul & Vollgraf 2017, https://github.com/zalandoresearch/fashion-mnist); read as every
``IdxDataset`` is, downloaded on first use from ``URL``."""

from reg_runner.data.idx_dataset import IdxDataset, published_gz


class FashionMNIST(IdxDataset):
    NAME = "Fashion-MNIST"
    CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
    URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    DATASET_ID = "com.github.zalandoresearch.fashion_mnist"  # in datamaestro's store
    GZ_MD5 = {  # as published by Zalando Research and used by torchvision.datasets.FashionMNIST
        "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
        "test_images": "bef4ecab320f06d8554ea6380940ec79",
        "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
    }
    FILE_MD5 = published_gz(GZ_MD5)  # what the files of data.root are checked against (data.verify)
