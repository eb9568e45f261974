"""Where a conversion loses: probes that compare converted models with their softmax teacher
(``t2r-compare``, ``cli.py``), one module per probe."""
