"""The process tests' fixtures, from `testing/alerts_stack.py`: a fake Twilio server and a
broker (a module with a `fake_twilio` of its own uses that one)."""

from testing.alerts_stack import bootstrap, fake_twilio  # noqa: F401  (fixtures)
