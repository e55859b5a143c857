"""transformer_lab: the Transformer assignment package (see the handout for what each module asks)."""
