"""The bottom layer both halves of roots_scale share: the error root, atomic file writes, the token
store format and the tokenizer loader. It imports nothing of `data_tools` or `roots_scale`."""
