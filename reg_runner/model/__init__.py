"""The ``model`` group: model families, each chosen by ``_target_`` in ``conf/model/<name>.yaml``.

A family is a subclass of ``ModelFamily`` (named by ``_target_``) plus its yaml. The class is the schema of
the yaml's other keys, and declares what the rest of reg_runner needs to know of the family:

- which keys decide what can share a stack: every key does, except those marked each run's own
  (``dropout: Annotated[number(0, 1), OWN]``, ``reg_runner.keys``): runs that differ only in those, such as
  ``dropout`` or ``init``, still train as one;
- ``n_parameters(shape, n_classes)``: its size, before anything is allocated;
- ``plain(shape, n_classes)``: one network as ``torch.nn`` modules, what a run's checkpoint loads into; its
  ``layers()`` are the weight layers that L1/L2 (``reg.apply_to=weights``), TensorBoard's probes and the
  landscapes' filter normalization act on, by display name; its ``hidden()`` the blocks whose outputs
  TensorBoard's activation histograms show;
- ``stacked(shape, n_classes, members, dropout_generators)``: K networks as one module whose every
  parameter has a leading member dimension (``reg_runner.model.stack.Stacked``). The default runs each
  member's own plain network on its slice of the parameters (exact by construction, on any device); a
  family with a faster form overrides it, and ``reg_runner.exactness`` checks before each stack that
  its members still get their lone runs' numbers to the bit;
- ``initialize(model, k, generator)``: member k's weights, drawn from its own generator (the default: the
  plain network's own initialization);
- ``check(shape, n_classes)``: rules that need the data's image shape; ``unread(key)``: why a key set on the
  command line would not be read; ``uses_batch_statistics()``: whether a batch of one image breaks it.

``shape`` is one image's ``(channels, height, width)``. The schemas import no torch, so a mistyped value is
refused before torch loads: a family module keeps its torch code in functions (or a companion module, as
``mlp`` and ``cnn`` do), imported when a network is built.
"""

from typing import ClassVar

from reg_runner.schema import FamilyGroup, family, family_parser

EXAMPLE = "reg_runner.model.mlp.MLP"


class ModelFamily(FamilyGroup):
    STRUCTURAL: ClassVar[None] = None  # was a tuple of the structural keys: now each key's own marker

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs):
        super().__pydantic_init_subclass__(**kwargs)
        if cls.STRUCTURAL is not None:
            raise TypeError(f"{cls.__name__}.STRUCTURAL: every key of a model family is structural unless marked each "
                            "run's own, as dropout: Annotated[number(0, 1, hi_open=True), reg_runner.keys.OWN]")

    def structural_keys(self) -> tuple[str, ...]:
        """The family's keys that runs must share to train as one stack (``_target_`` aside)."""
        from reg_runner.keys import OWN, stack_marker

        return tuple(k for k, f in type(self).model_fields.items() if k != "target" and stack_marker(f) is not OWN)

    def describe(self) -> str:
        return type(self).__name__

    def n_parameters(self, shape: tuple[int, ...], n_classes: int) -> int:
        """The parameter count; the default counts the plain network's, built without memory."""
        import torch

        with torch.device("meta"):
            return sum(p.numel() for p in self.plain(shape, n_classes).parameters())

    def size_key(self) -> str:
        """The key a model too large for the machine is refused by (its width, channels...)."""
        return self.structural_keys()[0] if self.structural_keys() else next(k for k in type(self).model_fields
                                                                              if k != "target")

    def check(self, shape: tuple[int, ...], n_classes: int) -> None:
        """Rules that need the data's image shape: raise ``ConfigError`` naming the key."""

    def unread(self, key: str) -> str | None:
        """Why ``model.<key>``, set on the command line, would not be read by this config (None: it is read)."""
        return None

    def uses_batch_statistics(self) -> bool:
        """Whether the network normalizes with batch statistics (BatchNorm), so a batch of one image breaks it."""
        return False

    def plain(self, shape: tuple[int, ...], n_classes: int):
        raise NotImplementedError(f"{type(self).__name__}.plain")

    def stacked(self, shape: tuple[int, ...], n_classes: int, members: list, dropout_generators: list):
        """K networks as one, member k configured by ``members[k]`` (this family, equal in the structural keys)."""
        from reg_runner.model.stack import Looped

        return Looped(members, shape, n_classes, dropout_generators)

    def initialize(self, model, k: int, generator) -> None:
        """Member k of a stacked ``model``: the plain network's own initialization, drawn from ``generator``."""
        from reg_runner.model.stack import initialize_as_plain

        initialize_as_plain(model, k, lambda: self.plain(model.shape, model.n_classes), generator)


ModelConfig = family(ModelFamily, "model", EXAMPLE)
parse_config = family_parser(ModelFamily, "model", EXAMPLE)  # a recorded config's model mapping -> its family


def load(run_dir, which: str = "best"):
    """The network of a run folder's ``checkpoints/<which>.pt``, as its family's plain network in eval mode."""
    import json
    from pathlib import Path

    import torch

    from reg_runner.schema import upgrade

    run_dir = Path(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=True)
    cfg = parse_config(upgrade(checkpoint["config"])["model"])
    data = json.loads((run_dir / "metrics.json").read_text())["data"]
    net = cfg.plain(image_shape(data["image_shape"]), data.get("n_classes", 10))
    net.load_state_dict(checkpoint["model"])
    return net.eval()


def image_shape(recorded: list) -> tuple[int, int, int]:
    """A recorded image shape as (channels, height, width) (records made before channels were kept: (H, W))."""
    return tuple(recorded) if len(recorded) == 3 else (1, *recorded)
