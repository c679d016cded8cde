"""Into and out of the Hugging Face ecosystem: export a checkpoint as a `transformers` model, initialize from one.

`convert` holds the name/layout mapping (no transformers import), `export` the `roots-train export-hf`
command, `load.init_model_from_hf` the import, `tokenizer` our sentencepiece model as a `tokenizers` one.
transformers, safetensors and tokenizers come with the `hf` extra (`pip install roots_scale[hf]`).
"""
