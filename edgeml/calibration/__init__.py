"""Calibration data sources and INT8 quantization (the INT8 issue fills this package)."""
