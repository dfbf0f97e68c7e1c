"""Reusable constructs the stacks compose."""
