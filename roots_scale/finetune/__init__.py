"""Fine-tuning on labelled files, on the pretraining engine: sequence classification (BERT's [CLS] or GPT's last
token) and text-to-text for decoder-only models, with validation metrics from scikit-learn and sacrebleu.

records (files to columns) → examples (columns to token samples) → models (task heads) → validation (metrics,
best checkpoint, early stopping) → run (the run `roots-train finetune` trains).
"""
