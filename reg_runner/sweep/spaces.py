"""Conditional search spaces for the Optuna sweeper (``hydra.sweeper.custom_search_space``): a parameter that only
matters when its switch is on is only suggested then (docs/search.md). The switches are config keys of their own
(``search.*``, declared by the preset), so each run records which branches its trial took."""


def regularization(cfg, trial) -> None:
    """The course's study: which regularizers and augmentation, how strong, with which optimizer and lr."""
    trial.suggest_categorical("model.norm", ["none", "batchnorm", "layernorm"])
    if trial.suggest_categorical("search.dropout", [False, True]):
        trial.suggest_float("model.dropout", 0.05, 0.6)
    if trial.suggest_categorical("search.l1", [False, True]):
        trial.suggest_float("reg.l1", 1e-7, 1e-3, log=True)
    if trial.suggest_categorical("search.l2", [False, True]):
        trial.suggest_float("reg.l2", 1e-6, 1e-2, log=True)
    trial.suggest_categorical("augmentation", ["none", "affine", "noise_affine"])
    optimizer = trial.suggest_categorical("optimizer", ["adam", "adamw", "sgd"])
    trial.suggest_float("optimizer.lr", 1e-4, 3e-1, log=True)
    if optimizer == "sgd":
        trial.suggest_float("optimizer.momentum", 0.0, 0.99)


def showcase(cfg, trial) -> None:
    """The best the course's 3x100 MLP can do on 3,000 images: the previous search's winners (a norm,
    affine + noise augmentation, Adam) with their strengths, weight decay and the schedule searched."""
    trial.suggest_categorical("model.norm", ["batchnorm", "layernorm"])
    if trial.suggest_categorical("search.dropout", [False, True]):
        trial.suggest_float("model.dropout", 0.02, 0.3)
    trial.suggest_float("augmentation.degrees", 0.0, 25.0)
    trial.suggest_float("augmentation.translate", 0.0, 0.2)
    trial.suggest_float("augmentation.shear", 0.0, 20.0)
    trial.suggest_float("augmentation.sigma", 0.0, 0.6)
    trial.suggest_float("optimizer.lr", 3e-4, 2e-2, log=True)
    trial.suggest_float("optimizer.weight_decay", 1e-4, 0.3, log=True)
    trial.suggest_categorical("scheduler", ["none", "cosine", "onecycle"])


def pareto(cfg, trial) -> None:
    """Accuracy against size: the family, its size and its regularization (docs/search.md, "Two goals")."""
    if trial.suggest_categorical("model", ["mlp", "cnn"]) == "mlp":
        trial.suggest_int("model.depth", 1, 4)
        trial.suggest_int("model.width", 16, 256, log=True)
    else:
        trial.suggest_categorical("model.channels", ["[4,8]", "[8,16]", "[16,32]"])
        trial.suggest_categorical("model.hidden", [0, 16, 32, 64])
    if trial.suggest_categorical("search.dropout", [False, True]):
        trial.suggest_float("model.dropout", 0.05, 0.5)
    if trial.suggest_categorical("search.l1", [False, True]):
        trial.suggest_float("reg.l1", 1e-6, 1e-3, log=True)
    if trial.suggest_categorical("search.l2", [False, True]):
        trial.suggest_float("reg.l2", 1e-6, 1e-2, log=True)
