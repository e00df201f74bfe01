"""Tests, doctests and the services they start run in demo mode: card tokens use the public demo key.

A test that checks the refusal to start without a key passes ``demo_mode=False`` to ``Settings`` itself.
"""

import os

os.environ.setdefault("RISKSTREAM_DEMO_MODE", "true")
