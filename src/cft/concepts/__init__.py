"""The concept stage: propose visual concepts per class with an LLM, filter them, validate them on images."""
