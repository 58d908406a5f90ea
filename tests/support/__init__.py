"""Helpers several test modules share: building services as a test needs them."""
