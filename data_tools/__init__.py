"""The corpus pipeline: raw Common Crawl / Wikipedia / JSONL in, a tokenized token store out."""
