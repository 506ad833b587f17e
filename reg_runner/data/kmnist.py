"""Kuzushiji-MNIST (``data=kmnist``): 28x28 grey images of 10 cursive Japanese (Kuzushiji) characters, in
MNIST's format and sizes (Clanuwat et al. 2018, https://github.com/rois-codh/kmnist); read as every ``IdxDataset``
is, downloaded on first use from ``URL``."""

from reg_runner.data.idx_dataset import IdxDataset, published_gz


class KMNIST(IdxDataset):
    NAME = "KMNIST"
    CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    URL = "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"
    DATASET_ID = "jp.ac.rois.codh.kmnist"  # in datamaestro's store
    GZ_MD5 = {  # as published by ROIS-DS CODH and used by torchvision.datasets.KMNIST
        "train_images": "bdb82020997e1d708af4cf47b453dcf7",
        "train_labels": "e144d726b3acfaa3e44228e80efcd344",
        "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
        "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
    }
    FILE_MD5 = published_gz(GZ_MD5)  # what the files of data.root are checked against (data.verify)
