"""Is an eval question, or a near copy of it, in the training data? Token n-grams found in the prepared datasets
(ngrams, scan), confirmed on the text (confirm), written as findings that eval can leave out (exclude)."""
