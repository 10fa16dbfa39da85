"""``python -m cmbstudy``: the command line, as the ``cmbstudy`` script (and as ``torchrun -m cmbstudy``)."""

import sys

from .cli import main

sys.exit(main())
