"""After pretraining, in one process: load a checkpoint of any layout, generate, evaluate, convert to one
state dict, and export to / import from Hugging Face transformers."""
