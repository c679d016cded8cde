"""Cleaning steps for the `clean` stage: normalization, language id, quality filters, PII redaction.

Every step has one interface (`base.Step`): it takes a `CleanDocument` and returns it (kept,
maybe changed) or None (dropped; the step's name is the reason).
"""
