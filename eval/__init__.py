"""eval: the official OTTO split and weighted recall, the original study's pair protocol,
next-click recall/MRR, and the session recommenders compared by ``otto-eval run``."""
