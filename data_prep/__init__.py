"""Raw sources -> offline-tokenized memory-mapped datasets ("medtrain.tokens/1"), and their reader.

This package imports nothing else of medtrain: eval imports its templates, the trainer its reader.
"""
