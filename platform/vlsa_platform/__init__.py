"""VLSA platform."""
