"""Classification heads, one per family (norm + pooling + head + distillation head)."""
