"""Conformance fuzzing: schemathesis's CLI against a running server (`make fuzz`, `make contract`)."""
