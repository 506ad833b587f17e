"""The ``augmentation`` group: transforms of the training batches, on the device
(``reg_runner.augmentation.ops``). Each option has its own keys, and only those."""

from typing import Annotated, Any, Literal, Union

from pydantic import Field

from reg_runner.schema import Bool, Group, Probability, integer, is_number, number, one_of, rule

Scale = rule(list, lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(is_number(x) for x in v)
             and 0 < v[0] <= v[1] <= 10, "[low, high] with 0 < low <= high <= 10", lambda v: [float(x) for x in v])
Transforms = rule(list[Any], lambda v: isinstance(v, list) and v and all(
    isinstance(t, dict) and isinstance(t.get("_target_"), str) for t in v),
                  "a non-empty list of transforms, each with a _target_ (torchvision.transforms.v2.*)")


class Option(Group):
    name: str  # each option's own Literal
    """the augmentation; set by choosing the option (augmentation=<option>)"""


class NoAugmentation(Option):
    name: Literal["none"]


class Augmented(Option):
    p: Probability
    """probability that an image is augmented"""


class Noise(Augmented):
    name: Literal["noise"]
    sigma: number(0)
    """noise std, in normalized pixel units"""
    clamp: Bool
    """back to the range of real pixels"""


class Affine(Augmented):
    name: Literal["affine"]
    degrees: number(0, 180)
    """rotation uniform in ±degrees"""
    scale: Scale
    """zoom uniform in [low, high]"""
    translate: number(0, 1, hi_open=True)
    """shift uniform in ±translate of the image size, per axis"""
    shear: number(0, 90, hi_open=True)
    """shear uniform in ±shear degrees"""


class NoiseAffine(Noise, Affine):  # the affine keys, then the noise's
    name: Literal["noise_affine"]


class Crop(Augmented):
    name: Literal["crop"]
    pad: integer(0, 64)
    """pixels: the shift is uniform in [-pad, pad] per axis (less than the image's side)"""
    fill: one_of("black", "reflect")
    """what the border shifted in shows"""
    flip: Bool
    """mirror left-right with probability 1/2 (images whose class survives it: not digits)"""


class Torchvision(Augmented):
    name: Literal["torchvision"]
    transforms: Transforms
    """torchvision.transforms.v2 transforms, each a mapping with its _target_ (one draw per batch)"""


AugmentationConfig = Annotated[
    Union[NoAugmentation, Noise, Affine, NoiseAffine, Crop, Torchvision], Field(discriminator="name")
]
