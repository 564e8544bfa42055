"""Cluster side: hostfiles, DeepSpeed configs, the memory/time plan and the launcher command."""
