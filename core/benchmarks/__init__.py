"""One schema module per benchmark: each reads every public layout of its benchmark (the release, the Hugging
Face copies, the community conversions) into one neutral multiple-choice record, `MCRecord`. Prep (training
examples) and eval (questions) both read through these, so a layout one accepts the other accepts, with the same
gold letters; what each then does with a record (skip it from training, keep it in the denominator) is theirs."""
