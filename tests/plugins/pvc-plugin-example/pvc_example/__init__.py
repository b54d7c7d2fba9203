"""Example third-party PVC plugin used by the test suite."""
