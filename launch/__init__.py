"""The cluster side: hostfiles, the memory/time plan, the launcher commands (pdsh, Slurm, Open MPI, local), the
preflight, and the supervisor that watches, ends and restarts a job. DeepSpeed configs are computed in core
(core.ds_config, core.run_spec), which the ranks share."""
