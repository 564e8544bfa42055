"""The orchestrators over training and evaluation: the Table 3 sweep and its cells, the paper's tables, reports,
the demo, and an eval spread over a hostfile's ranks."""
