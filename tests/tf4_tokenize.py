"""Run by the tests under transformers 4.46 (.tf4, made by `make setup`): a model directory's tokenizer loaded
with AutoTokenizer, the ids of the lines given as JSON on stdin printed as JSON."""

import json
import sys

import transformers
from transformers import AutoTokenizer

lines = json.load(sys.stdin)
tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
print(json.dumps({"transformers": transformers.__version__, "class": type(tok).__name__,
                  "ids": tok(lines)["input_ids"]}))
