"""The ``reg`` group: explicit L1 / L2 penalties added to the loss (``reg_runner.reg.penalty``)."""

from reg_runner.schema import Group, NonNegative, one_of


class RegConfig(Group):
    l1: NonNegative
    """λ1 of λ1‖θ‖₁"""
    l2: NonNegative
    """λ2 of λ2‖θ‖₂²"""
    apply_to: one_of("weights", "all")
    """read only when l1 or l2 is on"""
