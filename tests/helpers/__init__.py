"""What the tests share: tiny models and data, fakes, references written from the formulas, subprocess workers.

Tests import from here (`from tests.helpers.models import tiny_vit`), never from another test module or from
`conftest.py`, which holds fixtures only (tests/contracts/test_layout.py checks both).
"""
