"""Training entry points (`hcr train tokenizer|localizer|recovery`) and their shared pieces."""
