"""Attack tests: each asserts refusal and that nothing happened."""
