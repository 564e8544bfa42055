"""The floor every room stands on: recipes, model shapes, the run spec, errors, publishing, rank lifecycle.

launch/, the trainer (medtrain/), data_prep/ and eval/ import from here; this package imports none of them, so
the cluster side and the ranks agree on one computation instead of importing each other.
"""

__version__ = "0.1.0"
