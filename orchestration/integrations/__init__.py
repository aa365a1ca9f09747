"""Thin translations between optimizers' own interfaces and evofleet generations."""
