"""Analysis behind ``tools/analysis/``: how labels drift through the blocks
(:mod:`.token_fluctuation`)."""
