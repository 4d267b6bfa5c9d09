"""The package `quantbench` itself (pyproject.toml maps it to this folder; its subpackages
`quantbench.harness` and `quantbench.kernels` are the card's folders): the public surface for
plugins.

    from quantbench import Impl, Role, Needs, OwnWeights
"""

from quantbench.harness.registry import Impl, Needs, OwnWeights, Role

__all__ = ["Impl", "Needs", "OwnWeights", "Role"]
