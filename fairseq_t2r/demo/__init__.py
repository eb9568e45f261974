"""The main job (``t2r-demo``): swap, finetune and evaluate on real data, and write a report."""
