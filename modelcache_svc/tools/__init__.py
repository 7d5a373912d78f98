"""Measurement and evaluation commands beside the service; nothing of the service imports them."""
