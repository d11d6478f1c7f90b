"""Settings for the whole test suite."""

import torch

# `make test` runs two pytest workers on a 2-core machine: with torch's default of one thread
# per core each, the workers' OpenMP threads fight for the cores and small ops get ~50x slower.
torch.set_num_threads(1)
