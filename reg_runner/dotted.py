"""Dotted keys (``model.dropout``) in nested plain mappings: a run's recorded config, a search's shared config, a
YAML option file. The one walker of them; a DictConfig has ``OmegaConf.select`` for this."""

MISSING = object()  # ``get``'s default where None is a value a key can hold


def get(tree, key: str, default=None):
    """The value at ``key``, or ``default`` where a part of the path is missing (or not a mapping)."""
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def drop(tree, key: str) -> None:
    """Remove ``key`` from ``tree`` in place, if it is there."""
    parent, _, leaf = key.rpartition(".")
    node = get(tree, parent) if parent else tree
    if isinstance(node, dict):
        node.pop(leaf, None)


def flat(tree, prefix: str = "") -> dict:
    """``{dotted key: value}`` for every leaf of ``tree`` (a value that is not a mapping)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
