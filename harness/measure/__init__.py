"""Measurement instruments: each one records, none of them prints."""
