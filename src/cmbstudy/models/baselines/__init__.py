"""The published detectors of the paper's Table 2, reconstructed from their papers.

Each module registers its network(s) with :func:`cmbstudy.models.register_model`
on import. What is reconstructed and what is approximate is stated in each
module's docstring and in the book's methods chapter.
"""

from . import dou2016, dynunet, fan2022, tsuchida2024, wei2022  # noqa: F401  (each registers its networks)
