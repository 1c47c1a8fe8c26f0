"""Training entry points (`hcr train tokenizer|localizer|recovery|refiner`) and their shared pieces."""
