"""phpfpm-autoscaler: keep PHP-FPM pools sized to their load and memory budget."""

__version__ = "0.1.0"
