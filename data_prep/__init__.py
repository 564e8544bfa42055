"""Raw sources -> offline-tokenized memory-mapped datasets ("medtrain.tokens/1"), and their reader.

Imports only core: the benchmarks' schemas and the prompt templates live there, shared with eval; the ranks use
this package's reader.
"""
