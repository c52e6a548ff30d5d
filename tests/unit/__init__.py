"""Test package: module names stay unique across tiers (tests.unit.x, tests.e2e.x)."""
