"""hcr models: tokenizer, watermark, localizer, recovery, retrieval."""
