import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/utils.py

import torch  # noqa: E402

# one intra-op thread: the test models are tiny, and spinning OpenMP threads slow everything
# down several-fold whenever another process shares the 2 cores
torch.set_num_threads(1)
