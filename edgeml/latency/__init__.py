"""Latency measurement (``runner``) and its statistics (``stats``): the parts ``edgeml bench`` is made of."""
