"""Benchmarks of evofleet against plain Celery, Ray and multiprocessing (never run by the tests)."""
