"""What runs on a rank of a DeepSpeed job: the trainer, its batches and loss, checkpoints (and re-splitting them
for another world size), metrics, model building and export. Reads run_spec.json; never imports launch/."""
