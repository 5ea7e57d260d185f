"""Test scaffolding that the tests and the benchmarks share: the fake Twilio server, real
processes driven from outside (the detection worker, the alerts stack), event builders and the
dashboard's seed data. Not part of the installed package (pyproject.toml ships `shared`,
`services` and `migrations` only, and the image copies those)."""
